-- Every label a concept of an SAE has had, newest first. Parameters: $sae_id, $feature_id.
SELECT label_id, method, model, label, description, auroc, detection, created_at
FROM features
WHERE sae_id = $sae_id AND feature_id = $feature_id
ORDER BY created_at DESC, label_id DESC
