-- Which concepts separate sports news from business news in the demo corpus, and what are they called?
-- (shown by `saeembed demo`; run it with `saeembed sql --file` this file, or in any DuckDB client)
SELECT f.feature_id,
       any_value(l.label) AS label,
       round(avg(CASE WHEN d.meta->>'topic' = 'Sports'   THEN 1 ELSE 0 END), 3) AS share_sports,
       round(avg(CASE WHEN d.meta->>'topic' = 'Business' THEN 1 ELSE 0 END), 3) AS share_business,
       count(*) AS n_docs
FROM doc_features f
JOIN documents d USING (doc_id)
LEFT JOIN concept_labels l ON l.feature_id = f.feature_id AND l.corpus = 'demo' AND l.method = 'tokens'
GROUP BY f.feature_id
HAVING count(*) >= 20
ORDER BY share_sports DESC
LIMIT 10;
