"""Concept-filtered clustering: group documents by the concepts about one thing, not by everything in them.

1. Select concepts: those whose labels are closest to an `about` text (concept search; facets separated
   by ';' are searched one by one), or an explicit list of feature ids.
2. Restrict each document's binarized concept vector (present = max_act > 0) to those concepts. Documents
   with none of them are reported as such (cluster NULL), never forced into a cluster.
3. Jaccard distances between the restricted vectors, from a sparse binary matrix (intersections = X·Xᵀ).
4. HDBSCAN on the precomputed distances (default: no k; noise is cluster -1, kept as its own group) or
   spectral clustering with k clusters on the Jaccard similarities.
5. Per cluster: size, its top concepts by in-cluster minus out-of-cluster frequency (out = the other
   documents that have a selected concept), and its most typical documents: those with the highest mean
   similarity to the other members of their cluster (the medoid first). A 2-D map of the documents is
   t-SNE on the same distances.

`dense=True` clusters the same documents with the same algorithm on all-MiniLM-L6-v2 embeddings (cosine
distances), for comparison; its clusters are still described by the selected concepts.

Both methods need the full N × N distance matrix, so at most MAX_DOCUMENTS documents are clustered
(narrow with `where`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse

from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, document_embeddings
from saeembed.concepts.llm import ChatBackend, MalformedAnswer, complete_parsed, keyphrase_messages, parse_keyphrases
from saeembed.concepts.provenance import concept_labels, with_labels
from saeembed.errors import SaeembedError
from saeembed.options import ClusterOptions
from saeembed.storage.predicates import Predicate, parse_predicate
from saeembed.storage.store import RunInfo, Store

Method = Literal["hdbscan", "spectral"]

DEFAULT_CONCEPTS = 20
"""Concepts selected for an `about` text (concept search's default number of concepts per query)."""
MAX_DOCUMENTS = 12_000
"""Most documents clustered at once: the distance matrix is N × N (12k: 576 MB as float32, ~3 GB at peak
with scikit-learn's float64 copies). Measured with 20 concepts on this 2-core machine under load, 6,000
documents: Jaccard 2.4 s, HDBSCAN 6.8 s, spectral 15.5 s, t-SNE map 49 s; the N × N steps grow 4× per
doubling, so the cap costs a few minutes."""
TOP_CONCEPTS = 5
"""Concepts shown per cluster."""
TYPICAL_DOCS = 5
"""Typical documents shown (and stored) per cluster."""
SNIPPET_CHARS = 240
"""Characters of a typical document's text shown in summaries."""
NOISE = -1


class ClusterResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses`, `clusters` and `cluster_summaries`."""
    method: str
    """'hdbscan' or 'spectral'."""
    representation: str
    """What was clustered: 'concepts' (Jaccard over the selected concepts) or the sentence model (cosine)."""
    concepts: pl.DataFrame
    """The selected concepts: feature_id, label, similarity (to the `about` text; null for an explicit list),
    label_source, label_score, peak_tokens (see concepts.provenance), freq (share of the clustered documents
    where it is present)."""
    n_docs: int
    """Documents considered (the corpus's embedded documents satisfying `where`)."""
    n_without_concepts: int
    """Of those, documents with none of the selected concepts (cluster NULL, not clustered)."""
    n_clusters: int
    """Clusters found, noise not counted."""
    min_cluster_size: int | None
    """HDBSCAN's min_cluster_size as used (null for spectral)."""
    summaries: pl.DataFrame
    """One row per cluster, largest first, noise (-1) last: cluster, size, top_concepts (list of feature_id,
    label, label_source, freq_in, freq_out, delta), typical_docs (list of doc_id, text; most typical first)."""
    assignments: pl.DataFrame
    """One row per document considered: doc_id, cluster (-1 noise, null without concepts), has_concepts,
    x, y (2-D map; null when not mapped)."""
    keyphrases: tuple[str, ...] = ()
    """With an LLM: the keyphrases it added to `about` (each searched as a facet of its own)."""


def cluster_documents(
    store: Store,
    corpus: str,
    *,
    about: str | None = None,
    concepts: Sequence[int] | None = None,
    method: Method = "hdbscan",
    k: int | None = None,
    min_cluster_size: int | None = None,
    n_concepts: int = DEFAULT_CONCEPTS,
    where: str | None = None,
    dense: bool = False,
    mapped: bool = True,
    embedder: SentenceEmbedder | None = None,
    chat: ChatBackend | None = None,
) -> ClusterResult:
    """Cluster `corpus`'s documents (those satisfying `where`) on the concepts about `about` (or the
    feature ids in `concepts`); with `dense`, the same documents on sentence embeddings instead. Stores
    `clusters` and `cluster_summaries` rows under a new analysis id (kind 'cluster')."""
    started = time.perf_counter()
    ClusterOptions(
        corpus=corpus,
        about=about,
        concepts=concepts,
        method=method,
        k=k,
        min_cluster_size=min_cluster_size,
        n_concepts=n_concepts,
        where=where,
        dense=dense,
    )
    predicate = None if where is None else parse_predicate(where, "--where")
    run = store.latest_run(corpus)
    if about is not None or dense:
        embedder = embedder or SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    keyphrases = expand_about(about, chat) if about is not None and chat is not None else []
    if about is not None:
        selected = select_concepts(store, corpus, "; ".join([about, *keyphrases]), n_concepts, embedder)
    else:
        selected = explicit_concepts(run, concepts)
    selected = with_labels(selected, concept_labels(store, run, selected["feature_id"].to_list()))
    doc_ids = _documents(store, run, predicate)
    rows = _concept_rows(store, run, doc_ids, selected["feature_id"].to_list())
    clustered = np.unique(rows["doc_id"].to_numpy())
    if clustered.size == 0:
        raise SaeembedError(
            f"none of the {doc_ids.size} documents has any of the {selected.height} selected concepts: "
            "choose other concepts (another --about or --concepts), or widen --where"
        )
    if clustered.size > MAX_DOCUMENTS:
        raise SaeembedError(
            f"{clustered.size} documents have a selected concept; clustering compares every pair, so at most "
            f"{MAX_DOCUMENTS} are clustered at once: narrow them with --where (e.g. hash(doc_id) % 4 = 0)"
        )
    matrix = binary_matrix(rows, clustered, selected["feature_id"].to_list())
    if dense:
        vectors = document_embeddings(store, clustered.tolist(), embedder)
        distances = cosine_distances(vectors)
        representation = embedder.model_id
    else:
        distances = jaccard_distances(matrix)
        representation = "concepts"
    size = _min_cluster_size(clustered.size, min_cluster_size) if method == "hdbscan" else None
    labels = renumber(cluster_distances(distances, method, k=k, min_cluster_size=size))
    coordinates = map_2d(distances) if mapped else None
    summaries = _with_snippets(store, summarise(matrix, clustered, labels, distances, selected))
    assignments = _assignments(doc_ids, clustered, labels, coordinates)
    concept_freq = np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel() / clustered.size
    selected = selected.with_columns(pl.Series("freq", concept_freq))
    params = {
        "corpus": corpus,
        "about": about,
        "concepts": list(concepts) if concepts is not None else None,
        "method": method,
        "k": k,
        "min_cluster_size": min_cluster_size,
        "n_concepts": n_concepts,
        "where": None if predicate is None else predicate.text,
        "dense": dense,
        "llm": getattr(chat, "model", None),
    }
    inputs = {
        "run": run.run_id,
        "representation": representation,
        "n_docs": int(doc_ids.size),
        "n_clustered": int(clustered.size),
        "feature_ids": selected["feature_id"].to_list(),
        "min_cluster_size": size,
        "keyphrases": keyphrases,
    }
    analysis_id = store.record(
        "cluster",
        params,
        inputs,
        time.perf_counter() - started,
        {
            "clusters": assignments.select("doc_id", "cluster", "has_concepts", "x", "y"),
            "cluster_summaries": _summary_rows(summaries),
        },
    )
    return ClusterResult(
        analysis_id=analysis_id,
        method=method,
        representation=representation,
        concepts=selected,
        n_docs=int(doc_ids.size),
        n_without_concepts=int(doc_ids.size - clustered.size),
        n_clusters=int(np.unique(labels[labels != NOISE]).size),
        min_cluster_size=size,
        summaries=summaries,
        assignments=assignments,
        keyphrases=tuple(keyphrases),
    )


# -- concept selection -------------------------------------------------------------------------------


def expand_about(about: str, chat: ChatBackend) -> list[str]:
    """Keyphrases an LLM adds to `about` (the paper's query expansion); none when its answer is unreadable,
    so the clustering goes on with `about` alone."""
    try:
        return complete_parsed(chat, keyphrase_messages(about), parse_keyphrases, max_tokens=200, temperature=0.0)
    except MalformedAnswer:
        return []


def select_concepts(store: Store, corpus: str, about: str, n_concepts: int, embedder: SentenceEmbedder) -> pl.DataFrame:
    """The `n_concepts` concepts whose labels are closest to `about` among those present in the corpus:
    feature_id, label, similarity.

    An `about` of several facets separated by ';' ("sports; business; science") searches each facet on its
    own and takes their best concepts in turn: one query embedding of the whole text lands between the
    facets and matches none of them well (AG News, 60 concepts: spectral NMI with the topics 0.12 as one
    query, 0.33 as four; benchmarks/quality_cluster.py)."""
    from saeembed.concepts.search import search_concepts

    facets = [part.strip() for part in about.split(";") if part.strip()]
    per_facet = -(-n_concepts // len(facets))
    found = []
    for facet in facets:
        # Concepts present in no document of the corpus cannot group anything: search wider, keep present ones.
        hits = search_concepts(store, facet, corpus=corpus, top=4 * per_facet, embedder=embedder)
        found.append(hits.filter(pl.col("freq") > 0).head(per_facet).with_row_index("rank"))
    hits = pl.concat(found).sort("rank", maintain_order=True).unique("feature_id", keep="first", maintain_order=True)
    if hits.height == 0:
        raise SaeembedError(
            f"no concept label close to {about!r} belongs to a concept present in corpus '{corpus}': "
            "rephrase --about, or name concepts with --concepts"
        )
    return hits.head(n_concepts).select("feature_id", "label", "similarity")


def explicit_concepts(run: RunInfo, feature_ids: Sequence[int]) -> pl.DataFrame:
    """The given concepts, duplicates dropped and order kept: feature_id, similarity (null; labels are joined
    after). Ids outside the SAE are an error."""
    ids = list(dict.fromkeys(int(i) for i in feature_ids))
    outside = [i for i in ids if not 0 <= i < run.d_sae]
    if outside:
        raise SaeembedError(
            f"--concepts {outside[:5]}: not concepts of this SAE (feature ids run 0 to {run.d_sae - 1})"
        )
    return pl.DataFrame(
        {"feature_id": ids, "similarity": [None] * len(ids)}, schema={"feature_id": pl.Int32, "similarity": pl.Float64}
    )


# -- distances and clustering ------------------------------------------------------------------------


def binary_matrix(rows: pl.DataFrame, doc_ids: np.ndarray, feature_ids: Sequence[int]) -> sparse.csr_matrix:
    """Documents (`doc_ids`, sorted) × selected concepts (`feature_ids` order), 1 where present."""
    column = {f: j for j, f in enumerate(feature_ids)}
    row_index = np.searchsorted(doc_ids, rows["doc_id"].to_numpy())
    col_index = np.fromiter((column[f] for f in rows["feature_id"].to_list()), dtype=np.int64, count=rows.height)
    data = np.ones(rows.height, dtype=np.float32)
    return sparse.csr_matrix((data, (row_index, col_index)), shape=(doc_ids.size, len(feature_ids)))


def jaccard_distances(matrix: sparse.csr_matrix) -> np.ndarray:
    """1 − |A ∩ B| / |A ∪ B| between the rows of a binary sparse matrix (no row may be empty), float32.

    Intersections are X·Xᵀ, computed as sparse × (dense selected concepts × documents), so nothing of size
    documents × all concepts is ever built; unions are |A| + |B| − |A ∩ B|."""
    binary = (matrix > 0).astype(np.float32).tocsr()
    intersections = np.asarray(binary @ binary.T.toarray(), dtype=np.float32)
    sizes = np.asarray(binary.sum(axis=1), dtype=np.float32).ravel()
    unions = sizes[:, None] + sizes[None, :] - intersections
    distances = 1.0 - intersections / unions
    np.fill_diagonal(distances, 0.0)
    return distances


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """1 − cosine similarity between unit-norm rows, clipped to [0, 2], float32."""
    distances = 1.0 - vectors @ vectors.T
    np.clip(distances, 0.0, 2.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances.astype(np.float32, copy=False)


def cluster_distances(
    distances: np.ndarray, method: Method, *, k: int | None = None, min_cluster_size: int | None = None
) -> np.ndarray:
    """Cluster labels (-1 = HDBSCAN noise) from a precomputed distance matrix.

    Spectral clustering uses 1 − distance (Jaccard or cosine similarity, negatives clipped to 0) as its
    affinity, with k-means label assignment seeded for reproducible results."""
    n = distances.shape[0]
    if method == "hdbscan":
        # scikit-learn's HDBSCAN, not the hdbscan package's: on benchmarks/quality_cluster.py the package put
        # every document in noise in 6 of its 16 HDBSCAN runs (restricted vectors are often identical).
        from sklearn.cluster import HDBSCAN

        if n < min_cluster_size:
            raise SaeembedError(
                f"only {n} documents have a selected concept, fewer than --min-cluster-size {min_cluster_size}"
            )
        model = HDBSCAN(min_cluster_size=min_cluster_size, metric="precomputed", copy=True)
        return model.fit_predict(distances.astype(np.float64)).astype(np.int64)
    from sklearn.cluster import SpectralClustering

    if n <= k:
        raise SaeembedError(f"only {n} documents have a selected concept: too few for --k {k} clusters")
    affinity = np.clip(1.0 - distances, 0.0, 1.0).astype(np.float64)
    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0)
    with warnings.catch_warnings():
        # Groups of documents sharing no selected concept leave the affinity graph disconnected: its
        # components are then the clusters, which is the answer wanted, not a problem to warn about.
        warnings.filterwarnings("ignore", "Graph is not fully connected", UserWarning)
        return model.fit_predict(affinity).astype(np.int64)


def map_2d(distances: np.ndarray) -> np.ndarray | None:
    """[N, 2] t-SNE coordinates from the precomputed distances (None below 4 documents: too few to map)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = distances.shape[0]
    if n < 4:
        return None
    # t-SNE needs perplexity < N; 30 is scikit-learn's default, lowered for small sets.
    perplexity = float(min(30.0, (n - 1) / 3))
    model = TSNE(metric="precomputed", init="random", perplexity=perplexity, random_state=0)
    # One OpenMP thread: Barnes–Hut t-SNE's threads spin-wait whenever the cores are busy, which made a map
    # several times slower than one thread on a loaded machine (docs/benchmarks.md).
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit_transform(distances.astype(np.float64))


# -- summaries ---------------------------------------------------------------------------------------


def renumber(labels: np.ndarray) -> np.ndarray:
    """Cluster labels renumbered by size, 0 = largest (ties: the old number); noise stays -1."""
    found, counts = np.unique(labels[labels != NOISE], return_counts=True)
    order = found[np.lexsort((found, -counts))]
    mapping = dict(zip(order.tolist(), range(order.size), strict=True)) | {NOISE: NOISE}
    return np.fromiter((mapping[label] for label in labels.tolist()), dtype=np.int64, count=labels.size)


def summarise(
    matrix: sparse.csr_matrix, doc_ids: np.ndarray, labels: np.ndarray, distances: np.ndarray, concepts: pl.DataFrame
) -> pl.DataFrame:
    """Per cluster (largest first, noise last): size, top concepts by freq_in − freq_out (out = the other
    clustered documents), typical_ids: the doc_ids (rows of `matrix`) with the highest mean similarity to
    the members of their cluster, most typical first."""
    present = (matrix > 0).astype(np.float32).tocsc()
    feature_ids, names = concepts["feature_id"].to_list(), concepts["label"].to_list()
    sources = concepts["label_source"].to_list() if "label_source" in concepts.columns else [None] * len(names)
    n = labels.size
    order = sorted(np.unique(labels).tolist(), key=lambda c: (c == NOISE, -int((labels == c).sum()), c))
    rows = []
    for cluster in order:
        members = np.flatnonzero(labels == cluster)
        inside = np.asarray(present[members].sum(axis=0)).ravel()
        total = np.asarray(present.sum(axis=0)).ravel()
        freq_in = inside / members.size
        freq_out = (total - inside) / (n - members.size) if n > members.size else np.zeros_like(inside)
        delta = freq_in - freq_out
        top = sorted(range(len(feature_ids)), key=lambda j: (-delta[j], -freq_in[j], feature_ids[j]))[:TOP_CONCEPTS]
        similarity = 1.0 - distances[np.ix_(members, members)].mean(axis=1)
        typical = members[np.lexsort((members, -similarity))][:TYPICAL_DOCS]
        rows.append(
            {
                "cluster": cluster,
                "size": members.size,
                "top_concepts": [
                    {
                        "feature_id": feature_ids[j],
                        "label": names[j],
                        "label_source": sources[j],
                        "freq_in": float(freq_in[j]),
                        "freq_out": float(freq_out[j]),
                        "delta": float(delta[j]),
                    }
                    for j in top
                ],
                "typical_ids": doc_ids[typical].tolist(),
            }
        )
    return pl.DataFrame(rows)


def _with_snippets(store: Store, summaries: pl.DataFrame) -> pl.DataFrame:
    """typical_ids → typical_docs: each typical document's doc_id and the start of its text."""
    ids = sorted({i for row in summaries["typical_ids"].to_list() for i in row})
    texts = dict(store.rows("document_texts", {"doc_ids": ids}).iter_rows())
    typical = [[{"doc_id": i, "text": _snippet(texts[i])} for i in row] for row in summaries["typical_ids"].to_list()]
    return summaries.drop("typical_ids").with_columns(pl.Series("typical_docs", typical))


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


# -- plumbing ----------------------------------------------------------------------------------------


def _min_cluster_size(n: int, given: int | None) -> int:
    """`given`, else 1% of the clustered documents, at least 5 (HDBSCAN's own default, a floor for small
    sets): a group smaller than 1% of a corpus is too small to be worth a line in its summary."""
    return given if given is not None else max(5, n // 100)


def _documents(store: Store, run: RunInfo, predicate: Predicate | None) -> np.ndarray:
    doc_ids = store.run_documents(run, predicate)
    if doc_ids.size == 0:
        condition = " with that --where" if predicate is not None else ""
        raise SaeembedError(f"no documents to cluster: corpus '{run.corpus}'{condition} has none embedded")
    return doc_ids


def _concept_rows(store: Store, run: RunInfo, doc_ids: np.ndarray, feature_ids: list[int]) -> pl.DataFrame:
    docs = pa.table({"doc_id": pa.array(doc_ids, type=pa.int64())})
    return store.rows("cluster_concept_rows", {"run_id": run.run_id, "feature_ids": feature_ids}, cluster_docs=docs)


def _assignments(
    doc_ids: np.ndarray, clustered: np.ndarray, labels: np.ndarray, coordinates: np.ndarray | None
) -> pl.DataFrame:
    """Every considered document with its cluster (clusters renumbered by size: 0 = largest)."""
    frame = pl.DataFrame(
        {
            "doc_id": clustered,
            "cluster": labels,
            "x": coordinates[:, 0] if coordinates is not None else np.full(clustered.size, np.nan),
            "y": coordinates[:, 1] if coordinates is not None else np.full(clustered.size, np.nan),
        },
        schema={"doc_id": pl.Int64, "cluster": pl.Int32, "x": pl.Float64, "y": pl.Float64},
    ).fill_nan(None)
    everyone = pl.DataFrame({"doc_id": doc_ids}, schema={"doc_id": pl.Int64})
    joined = everyone.join(frame, on="doc_id", how="left")
    return joined.select("doc_id", "cluster", pl.col("cluster").is_not_null().alias("has_concepts"), "x", "y")


def _summary_rows(summaries: pl.DataFrame) -> pa.Table:
    """`cluster_summaries` rows: the top concepts and the typical documents' ids as JSON text."""
    return pa.table(
        {
            "cluster": pa.array(summaries["cluster"].to_list(), type=pa.int32()),
            "size": pa.array(summaries["size"].to_list(), type=pa.int64()),
            "top_concepts": [_json(row) for row in summaries["top_concepts"].to_list()],
            "typical_docs": [_json([d["doc_id"] for d in row]) for row in summaries["typical_docs"].to_list()],
        }
    )


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
