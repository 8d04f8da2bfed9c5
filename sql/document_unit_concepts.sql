-- The units of document $doc_id (in every unit corpus made from its corpus), each with its $per_unit strongest
-- concepts in the latest run that embedded it (none where no run has). Parameters: $doc_id, $per_unit.
WITH unit_rows AS (
    SELECT u.doc_id, c.name AS unit_corpus, u.unit_index, u.char_start, u.char_end
    FROM units u JOIN corpora c USING (corpus_id)
    WHERE u.parent_doc_id = $doc_id
),
unit_runs AS (
    SELECT e.doc_id, arg_max(e.run_id, r.updated_at) AS run_id
    FROM embedded_documents e JOIN embed_runs r USING (run_id)
    WHERE e.doc_id IN (SELECT doc_id FROM unit_rows)
    GROUP BY e.doc_id
),
strongest AS (
    SELECT f.doc_id, f.feature_id, f.max_act, f.argmax_pos
    FROM doc_features f JOIN unit_runs ur ON ur.doc_id = f.doc_id AND ur.run_id = f.run_id
    QUALIFY row_number() OVER (PARTITION BY f.doc_id ORDER BY f.max_act DESC, f.feature_id) <= $per_unit
)
SELECT u.unit_corpus, u.unit_index, u.doc_id, u.char_start, u.char_end, ur.run_id,
       coalesce(list(s.feature_id ORDER BY s.max_act DESC, s.feature_id) FILTER (WHERE s.feature_id IS NOT NULL), [])
           AS feature_ids,
       coalesce(list(s.argmax_pos ORDER BY s.max_act DESC, s.feature_id) FILTER (WHERE s.feature_id IS NOT NULL), [])
           AS argmax_pos
FROM unit_rows u
LEFT JOIN unit_runs ur USING (doc_id)
LEFT JOIN strongest s USING (doc_id)
GROUP BY ALL
ORDER BY u.unit_corpus, u.unit_index
