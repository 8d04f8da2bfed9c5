-- What identifies the state of an SAE's labels cheaply (labels are only ever appended): their count and
-- largest label_id. Parameters: $sae_id.
SELECT count(*) AS n, max(label_id) AS last FROM features WHERE sae_id = $sae_id
