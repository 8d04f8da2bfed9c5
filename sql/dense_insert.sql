-- Store sentence embeddings (table new_embeddings: doc_id, embedding) made by a model. Parameters: $model.
INSERT INTO doc_embeddings SELECT $model, doc_id, embedding FROM new_embeddings
