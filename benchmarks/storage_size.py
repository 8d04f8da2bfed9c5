"""Bytes per document: saeembed's database and shards against the reference toolkit's pickle, same documents.

    python benchmarks/storage_size.py [--docs 300] [--max-tokens 256]

The reference is interp-embed (PyPI, the toolkit of Jiang et al. 2025), whose `Dataset` keeps each
document's per-token SAE codes (a CSR matrix), its max and sum over tokens, its tokens as strings and the
texts, and saves them as one pickle. It is installed with `--no-deps` into a folder of its own (the
benchmark's own environment) and driven by an adapter over saeembed's reader and SAE, so both store the
codes of the very same tokens. Its other back-ends' modules (sae_lens, transformer_lens, goodfire,
openai, dotenv) are not installed: their names are bound to placeholders that raise if used, and the path
measured here never uses them.

Documents: news articles shipped with sae-probes (`100_news_fake`, at least 1,200 characters), truncated
at --max-tokens. Printed: bytes per document of each layout, their ratio, and what saeembed's concept
rows weigh alone; what the analyses read by default (the columns doc_id, feature_id and max_act: Parquet
reads each column apart); and the share of rows an analysis counts as present by default (max_act >=
0.5 x the concept's p90, the diff's presence rule).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy.sparse import csr_matrix

from saeembed.jobs import embed, ingest, resolve_sae
from saeembed.model.pooling import EmbedOptions
from saeembed.model.reader import Reader
from saeembed.storage.corpora import read_sae_probes
from saeembed.storage.shards import column_bytes
from saeembed.storage.store import Store

REFERENCE = "interp-embed==0.1.0"
READ_BY_DEFAULT = ("doc_id", "feature_id", "max_act")
"""The columns of doc_features the diff, property search and NPMI read (the others serve look-ups and the
marked examples)."""
ABSENT_BACKENDS = ("sae_lens", "transformer_lens", "goodfire", "goodfire.api.features.client", "openai", "dotenv")


def install_reference(folder: Path) -> None:
    """interp-embed into `folder` without its dependencies, importable from here on."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder), REFERENCE],
        check=True,
    )
    sys.path.insert(0, str(folder))
    absent = [name for name in ABSENT_BACKENDS if importlib.util.find_spec(name.split(".")[0]) is None]
    for name in absent:
        sys.modules[name] = _placeholder(name)


def _placeholder(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def missing(attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"{name}.{attribute} is not installed for this benchmark")

        return refuse

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def reference_adapter(reader: Reader, sae, options: EmbedOptions):
    """An interp-embed SAE over saeembed's reader and SAE: per-token codes of each document's own tokens."""
    from interp_embed.saes.base_sae import BaseSAE

    prefix = reader.prefix_ids(options.chat_template)

    class SaeembedSAE(BaseSAE):
        def load_models(self) -> None:
            self.tokenizer = reader.tokenizer

        def destroy_models(self) -> None:
            pass

        def tokenize(self, documents, as_tokens=True, padding=False):
            ids = reader.tokenize(documents, options.max_tokens).ids
            return [[reader.tokenizer.decode([token]) for token in doc] for doc in ids]

        def encode(self, texts):
            ids = reader.tokenize(texts, options.max_tokens).ids
            with torch.inference_mode():
                tokens = reader.document_residuals(ids, prefix)
                codes = sae.encode(tokens.residuals).float().cpu().numpy()
            bounds = np.cumsum([0, *tokens.lengths.tolist()])
            return [csr_matrix(codes[start:end]) for start, end in itertools.pairwise(bounds)]

    return SaeembedSAE()


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    options = EmbedOptions(max_tokens=args.max_tokens)
    articles = read_sae_probes("100_news_fake").filter(pl.col("prompt").str.len_chars() >= 1200)
    corpus = articles.sample(args.docs, seed=7).select(
        pl.int_range(pl.len()).alias("id"), pl.col("prompt").alias("text")
    )
    resolved = resolve_sae("default")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        corpus.write_parquet(folder / "docs.parquet")
        corpus.head(1).write_parquet(folder / "one.parquet")
        sizes, summary = {}, None
        for name in ("one", "docs"):
            db = folder / f"{name}.duckdb"
            with Store.open(db) as store:
                ingest(store, folder / f"{name}.parquet", corpus="size")
                summary = embed(store, "size", device="cpu", dtype="float32", options=options)
            sizes[name] = db.stat().st_size + folder_bytes(Path(f"{db}.shards"))
        with Store.open(db, read_only=True) as store:
            rows = store.query("SELECT count(*) AS n FROM doc_features")["n"][0]
            present = store.query(
                """
                WITH p AS (SELECT feature_id, quantile_cont(max_act, 0.9) AS p90 FROM doc_features GROUP BY 1)
                SELECT count(*) AS n FROM doc_features JOIN p USING (feature_id) WHERE max_act >= 0.5 * p90
                """
            )["n"][0]
        features = sum(file.stat().st_size for file in Path(f"{db}.shards").rglob("features.parquet"))
        columns = column_bytes(Path(f"{db}.shards"))
        read = sum(columns[name] for name in READ_BY_DEFAULT)
        # What a document adds: the database file's fixed part (schema, the SAE's shipped labels) is the
        # one-document store's size, paid once per database.
        project = (sizes["docs"] - sizes["one"]) / (args.docs - 1) * args.docs

        reader = Reader.load(layer=resolved.sae.cfg.layer, device="cpu", dtype="float32")
        install_reference(folder / "reference")
        from interp_embed import Dataset

        adapter = reference_adapter(reader, resolved.sae, options)
        dataset = Dataset(corpus.select("id", "text").to_dicts(), adapter, batch_size=8)
        dataset.save_to_file(str(folder / "reference.pkl"))
        reference = (folder / "reference.pkl").stat().st_size

    n = args.docs
    print(f"documents                      {n} (≤ {args.max_tokens} tokens, {summary.tokens / n:.0f} on average)")
    print(f"concept rows                   {rows:,} ({rows / n:,.0f} per document, {features / rows:.1f} B a row)")
    once = sizes["one"] / 1024**2
    print(f"saeembed (database + shards)   {project / n / 1024:,.1f} KiB per document (+ {once:.1f} MiB once)")
    print(f"  concept rows alone           {features / n / 1024:,.1f} KiB per document")
    print(f"interp-embed pickle            {reference / n / 1024:,.1f} KiB per document")
    print(f"saeembed / interp-embed        {project / reference:.2f}x (every firing kept)")
    print(f"what diff, search, NPMI read   {read / n / 1024:,.1f} KiB per document ({', '.join(READ_BY_DEFAULT)})")
    print(f"  / interp-embed               {read / reference:.2f}x")
    print(f"rows present by the diff rule  {present / rows:.0%} of the rows (max_act >= 0.5 x the concept's p90)")


if __name__ == "__main__":
    main()
