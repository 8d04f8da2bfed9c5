-- One embedding run as saeembed reads it (RunInfo): its corpus, its SAE (width, path) and the settings it
-- reads documents with. Parameters: $run_id.
SELECT r.run_id, c.name AS corpus, r.sae_id, r.reader_model, r.layer, r.status,
       s.d_sae, r.max_tokens, r.chat_template, r.dtype, s.path AS sae_path
FROM embed_runs r
JOIN corpora c USING (corpus_id)
JOIN saes s USING (sae_id)
WHERE r.run_id = $run_id
