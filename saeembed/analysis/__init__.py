"""Analyses over stored concept vectors: each a plain function over a DuckDB connection."""
