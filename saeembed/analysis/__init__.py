"""The analyses over stored concept vectors (diff, hypotheses, correlate, cluster, retrieve, releases,
history, look-ups): each selects through the store, computes, and records through the store."""
