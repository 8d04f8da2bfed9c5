-- How often one concept of a run fires among the documents of each value of a meta column (a concept
-- page): level, n (documents with that value), present (of those, where the concept fires); the 50 most
-- common values. The column name arrives as a bound parameter, never as SQL text.
-- Parameters: $run_id, $feature_id, $column.
SELECT d.meta->>$column AS level, count(*) AS n, count(f.doc_id) AS present
FROM embedded_documents e
JOIN documents d USING (doc_id)
LEFT JOIN doc_features f ON f.run_id = e.run_id AND f.doc_id = e.doc_id AND f.feature_id = $feature_id
    AND f.max_act > 0
WHERE e.run_id = $run_id AND d.meta->>$column IS NOT NULL
GROUP BY 1
ORDER BY n DESC, level
LIMIT 50
