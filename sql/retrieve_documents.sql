-- The documents of a corpus a search may return. The --where predicate replaces TRUE in `AND (TRUE)`
-- (checked first: one expression over documents' columns and meta, no subquery, no side effects).
-- Parameters: $corpus_id.
SELECT doc_id
FROM documents d
WHERE corpus_id = $corpus_id AND (TRUE)
ORDER BY doc_id;
