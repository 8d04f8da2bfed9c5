"""The storage layer: the Store (schema, named queries from sql/, writes in transactions), document
selection by a checked predicate, percentiles, the files kept beside the database, and the sources and
bundled corpora read into it. The only layer that holds SQL; it imports nothing above errors."""
