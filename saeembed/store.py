"""`saeembed.store`, the import path of earlier releases, kept working;
the code lives in `saeembed.storage.store`."""

from saeembed.storage.store import Store, default_db_path

__all__ = ["Store", "default_db_path"]
