-- How many documents an embedding run holds, and their mean number of concepts. Parameters: $run_id.
SELECT count(*) AS documents, avg(n_features) AS mean_concepts
FROM embedded_documents
WHERE run_id = $run_id
