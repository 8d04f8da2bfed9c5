-- Problems that would mean a damaged store, one row each (none when the store is consistent):
-- concept rows of a document the run never finished, documents whose recorded concept count differs
-- from their rows, concept rows for one (run, document, concept) twice, a document embedded twice by
-- one run, and documents stored twice.
SELECT 'concept rows without a finished document' AS problem, count(*) AS n
FROM doc_features f ANTI JOIN embedded_documents e USING (run_id, doc_id)
HAVING count(*) > 0
UNION ALL
SELECT 'documents whose n_features differs from their concept rows', count(*)
FROM embedded_documents e
LEFT JOIN (SELECT run_id, doc_id, count(*) AS rows FROM doc_features GROUP BY ALL) f USING (run_id, doc_id)
WHERE e.n_features <> coalesce(f.rows, 0)
HAVING count(*) > 0
UNION ALL
SELECT 'concept rows stored twice', count(*)
FROM (SELECT run_id, doc_id, feature_id FROM doc_features GROUP BY ALL HAVING count(*) > 1)
HAVING count(*) > 0
UNION ALL
SELECT 'documents embedded twice by a run', count(*)
FROM (SELECT run_id, doc_id FROM embedded_documents GROUP BY ALL HAVING count(*) > 1)
HAVING count(*) > 0
UNION ALL
SELECT 'documents stored twice in a corpus', count(*)
FROM (SELECT corpus_id, content_hash FROM documents GROUP BY ALL HAVING count(*) > 1)
HAVING count(*) > 0;
