"""The model layer: where readers come from, the reader, tokens, the SAE and its checkpoint formats,
training, pooling. torch, transformers and safetensors only: no DuckDB, polars, pyarrow or Prefect, so it
runs (and is benchmarked) on a machine that has nothing else."""
