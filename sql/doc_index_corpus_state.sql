-- What identifies a corpus's documents cheaply (they are only ever added, with rising doc_ids): its
-- creation time, count, largest and summed doc_id. Parameters: $corpus_id.
SELECT (SELECT created_at FROM corpora WHERE corpus_id = $corpus_id) AS created,
       count(*) AS n, coalesce(max(doc_id), 0) AS largest, coalesce(sum(doc_id), 0) AS total
FROM documents
WHERE corpus_id = $corpus_id
