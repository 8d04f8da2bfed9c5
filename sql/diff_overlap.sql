-- How many documents the two sides of a diff share (tables diff_side_a, diff_side_b: doc_id).
SELECT count(*) AS n FROM diff_side_a SEMI JOIN diff_side_b USING (doc_id)
