"""`saeembed.labels`, the import path of earlier releases, kept working;
the code lives in `saeembed.concepts.labels`."""

from saeembed.concepts.labels import label_concepts

__all__ = ["label_concepts"]
