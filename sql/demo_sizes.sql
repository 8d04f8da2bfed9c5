-- What the demo reports of a database: documents and concept rows in all.
SELECT (SELECT count(*) FROM documents) AS documents, (SELECT count(*) FROM doc_features) AS concept_rows
