"""`saeembed.pipeline`, the import path of earlier releases, kept working;
the code lives in `saeembed.jobs`."""

from saeembed.jobs import embed, ingest

__all__ = ["embed", "ingest"]
