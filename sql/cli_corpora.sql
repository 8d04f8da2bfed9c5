-- The corpora of a database with their document counts (`saeembed corpora list`).
SELECT c.name AS corpus, count(d.doc_id) AS documents, c.source, c.created_at
FROM corpora c
LEFT JOIN documents d USING (corpus_id)
GROUP BY ALL
ORDER BY c.name
