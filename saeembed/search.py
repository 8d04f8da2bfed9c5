"""`saeembed.search`, the import path of earlier releases, kept working;
the code lives in `saeembed.concepts.search`."""

from saeembed.concepts.search import search_concepts

__all__ = ["search_concepts"]
