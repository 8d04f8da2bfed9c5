"""Prefect flows over the saeembed library (installed as `saeembed_flows`).

Importing this package sets Prefect defaults that these machines need before Prefect is imported:
no telemetry (there is no internet) and a longer start-up timeout for the ephemeral server.
"""

import os

for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)
