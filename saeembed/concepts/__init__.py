"""The concepts layer: labels (making, scoring, storing), the LLM transport and prompts, examples,
exemplar vectors, concept search, dense embeddings and the document index. Imports model and storage."""
