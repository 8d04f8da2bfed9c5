"""The long jobs as plain Python: ingest a source, embed a corpus, train an SAE on a corpus.

Each job is split into the steps the Prefect flows run as tasks (flows/), and each has a one-call
function here for use from Python without Prefect.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from saeembed.concepts.labels import load_shipped_labels
from saeembed.errors import SaeembedError
from saeembed.model.formats import check_compatible, load_sae
from saeembed.model.pooling import BatchUnits, EmbedOptions, embed_batch
from saeembed.model.reader import DEFAULT_READER, Device, DType, Reader, length_batches
from saeembed.model.sae import SparseAutoencoder
from saeembed.model.units import TOKEN_INPUT, UnitSpec, parse_unit, token_units, unit_spans
from saeembed.storage.percentiles import concept_p90
from saeembed.storage.shards import DEFAULT_SHARD_DOCS
from saeembed.storage.sources import SourceRows, content_hash, read_source
from saeembed.storage.store import RunSettings, Store

DEFAULT_SAE_DIR = Path(__file__).parent / "data" / "default_sae"


class IngestReport(NamedTuple):
    corpus: str
    """Corpus the rows went to."""
    read: int
    """Rows read from the source."""
    inserted: int
    """New documents stored."""
    already_present: int
    """Rows already in the corpus (same content hash): re-ingest adds nothing."""
    skipped_empty: int
    """Rows with a null, empty or blank text: reported, not stored."""
    skipped_duplicate: int
    """Rows repeating an earlier row of the same source."""
    empty_examples: list[str]
    """Ids (or row numbers) of some skipped empty rows."""
    skipped_bad_line: int
    """JSONL lines that are not a JSON object, skipped with on_bad_line='skip' (counted in `read`)."""
    bad_line_examples: list[str]
    """Up to 5 of them as 'line N: reason'."""
    duplicate_ids: int
    """Rows whose id an earlier row of the source has with another text or metadata (in every mode)."""
    skipped_duplicate_id: int
    """Of those, rows not stored (none with on_duplicate_id='keep'). read = inserted + already_present +
    skipped_empty + skipped_duplicate + skipped_duplicate_id + skipped_bad_line."""
    duplicate_id_examples: list[str]
    """Up to 5 of the repeated ids."""
    replaced_surrogates: int
    """Rows whose JSON held a lone UTF-16 surrogate escape, stored with U+FFFD in its place."""


def ingest(
    store: Store,
    path: str | Path,
    *,
    corpus: str,
    text_col: str = "text",
    id_col: str | None = None,
    table: str | None = None,
    on_bad_line: str = "error",
    on_duplicate_id: str = "keep",
) -> IngestReport:
    """Read a .parquet/.csv/.jsonl file, a glob of them, a folder of .txt files or a DuckDB table into
    corpus `corpus`. on_bad_line ('error' or 'skip') and on_duplicate_id ('keep', 'first', 'last' or
    'error') are those of `read_source`."""
    source = read_source(
        path, text_col=text_col, id_col=id_col, table=table, on_bad_line=on_bad_line, on_duplicate_id=on_duplicate_id
    )
    return store_source(store, source, corpus=corpus, path=path)


def store_source(store: Store, source: SourceRows, *, corpus: str, path: str | Path) -> IngestReport:
    """Add rows read by `read_source` to corpus `corpus` (one transaction; known rows are skipped)."""
    if not corpus or not corpus.strip():
        raise SaeembedError("--corpus must be a non-empty name")
    counts = store.add_documents(corpus, source.rows, source=str(Path(path).resolve()))
    return IngestReport(
        corpus=corpus,
        read=source.n_read,
        inserted=counts.inserted,
        already_present=counts.already_present,
        skipped_empty=source.skipped_empty,
        skipped_duplicate=source.skipped_duplicate,
        empty_examples=source.empty_examples,
        skipped_bad_line=source.skipped_bad_line,
        bad_line_examples=source.bad_line_examples,
        duplicate_ids=source.duplicate_ids,
        skipped_duplicate_id=source.skipped_duplicate_id,
        duplicate_id_examples=source.duplicate_id_examples,
        replaced_surrogates=source.replaced_surrogates,
    )


@dataclass(frozen=True)
class EmbedStats:
    documents: int = 0
    """Documents embedded."""
    tokens: int = 0
    """Document tokens read (after truncation, template excluded)."""
    truncated: int = 0
    """Documents longer than max_tokens."""
    features: int = 0
    """Concept rows written (sum over documents of concepts present)."""
    seconds: float = 0.0
    """Wall time spent."""

    def __add__(self, other: EmbedStats) -> EmbedStats:
        return EmbedStats(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))


def embed_pending(
    store: Store,
    run_id: int,
    reader: Reader,
    sae: SparseAutoencoder,
    options: EmbedOptions,
    *,
    limit: int,
    among: Sequence[int] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> EmbedStats:
    """Embed up to `limit` of the run's not-yet-embedded documents (of `among`, when given) and store them as
    shards (at least one: `Store.shard_writer`), whole batches kept when interrupted. Where the run's corpus
    is a corpus of units, each unit's document is read whole and its tokens pooled per unit.

    `on_batch(documents, tokens)` is called after each batch is embedded (progress bars).
    """
    started = time.perf_counter()
    pending = store.pending_documents(run_id, limit=limit, among=among)
    if pending.height == 0:
        return EmbedStats()
    units = _PendingUnits.of(store, pending["doc_id"].to_list(), reader)
    texts = pending["text"].to_list() if units is None else units.texts
    doc_ids = pending["doc_id"].to_list() if units is None else units.parent_ids
    tokenized = reader.tokenize(texts, options.max_tokens)
    prefix = reader.prefix_ids(options.chat_template)
    stats = EmbedStats()
    writer = store.shard_writer(run_id, max_docs=limit)
    try:
        for batch in length_batches(
            [len(ids) + len(prefix) for ids in tokenized.ids],
            batch_size=options.batch_size,
            max_batch_tokens=options.max_batch_tokens,
        ):
            embedded = embed_batch(
                reader,
                sae,
                [doc_ids[i] for i in batch],
                [tokenized.ids[i] for i in batch],
                [tokenized.n_tokens_total[i] for i in batch],
                prefix,
                options.max_tokens,
                units=None if units is None else units.batch(batch, options.max_tokens),
            )
            writer.add(pa.table(embedded.documents), pa.table(embedded.features))
            rows = len(embedded.documents["doc_id"])
            truncated = int(embedded.documents["truncated"].sum())
            stats = stats + EmbedStats(rows, embedded.n_tokens, truncated, len(embedded.features["doc_id"]))
            if on_batch is not None:
                on_batch(rows, embedded.n_tokens)
    finally:
        writer.flush()  # the batches embedded so far, also when interrupted
    return replace(stats, seconds=time.perf_counter() - started)


class _PendingUnits(NamedTuple):
    """Pending units grouped by the document they are spans of: what embedding one batch of units needs."""

    parent_ids: list[int]
    texts: list[str]
    """The documents' texts, read whole."""
    unit_ids: list[np.ndarray]
    """Per document, the doc_id of each of its units."""
    wanted: list[np.ndarray]
    """Per document, which of its units are pending (the others were embedded by an earlier call)."""
    token_unit: list[np.ndarray]
    """Per document, the unit (index among its units) of each of its tokens."""

    @classmethod
    def of(cls, store: Store, unit_ids: Sequence[int], reader: Reader) -> _PendingUnits | None:
        """The units among `unit_ids` with their documents; None when they are whole documents."""
        units = store.units_of_parents(unit_ids)
        if units.height == 0:
            return None
        parents = units["parent_doc_id"].unique(maintain_order=True)
        texts = store.rows("listed_document_texts", listed=pl.DataFrame({"doc_id": parents}))
        text_of = dict(zip(texts["doc_id"].to_list(), texts["text"].to_list(), strict=True))
        ordered = [text_of[p] for p in parents.to_list()]
        groups = units.partition_by("parent_doc_id", maintain_order=True)
        offsets = reader.token_offsets(ordered)
        return cls(
            parent_ids=parents.to_list(),
            texts=ordered,
            unit_ids=[g["doc_id"].to_numpy() for g in groups],
            wanted=[g["wanted"].to_numpy() for g in groups],
            token_unit=[
                token_units(o, list(zip(g["char_start"].to_list(), g["char_end"].to_list(), strict=True)))
                for o, g in zip(offsets, groups, strict=True)
            ],
        )

    def batch(self, parents: Sequence[int], max_tokens: int) -> BatchUnits:
        """The pending units of documents `parents` (indices), rows in document order."""
        ids, token_unit, totals, first_row = [], [], [], 0
        for parent in parents:
            wanted = self.wanted[parent]
            row_of_unit = np.full(wanted.size, -1, dtype=np.int64)
            row_of_unit[wanted] = first_row + np.arange(int(wanted.sum()))
            token_unit.append(row_of_unit[self.token_unit[parent][:max_tokens]])
            ids.append(self.unit_ids[parent][wanted])
            totals.append(np.bincount(self.token_unit[parent], minlength=wanted.size)[wanted])
            first_row += int(wanted.sum())
        return BatchUnits(np.concatenate(ids).astype(np.int64), token_unit, np.concatenate(totals).astype(np.int32))


SPLIT_SLICE_DOCS = 2_000
"""Documents split into units per transaction (an interrupted split keeps whole slices)."""


def split_units(store: Store, corpus: str, unit: UnitSpec, reader: Reader | None = None) -> str:
    """The unit corpus 'CORPUS:UNIT', every document of `corpus` split into its units (documents added since
    the last split are split now). Chunks of N tokens need the `reader` whose tokens they count."""
    parent_id = store.corpus_id(corpus)
    if store.unit_of_corpus(parent_id) is not None:
        raise SaeembedError(f"'{corpus}' is a corpus of units already: embed it with --unit document")
    if unit.kind == "chunk" and reader is None:
        raise SaeembedError("chunk units need the reader whose tokens they count")
    name = f"{corpus}:{unit}"
    tokenizer = reader.model_id if unit.kind == "chunk" and reader is not None else None
    unit_corpus_id = store.make_unit_corpus(name, parent_id=parent_id, unit=str(unit), tokenizer=tokenizer)
    while (documents := store.unsplit_documents(parent_id, unit_corpus_id, limit=SPLIT_SLICE_DOCS)).height:
        store.add_units(unit_corpus_id, unit_rows(documents, unit, reader))
    return name


def unit_rows(documents: pl.DataFrame, unit: UnitSpec, reader: Reader | None = None) -> pl.DataFrame:
    """The units of `documents` (doc_id, external_id, text, meta) as rows for `Store.add_units`: each a span
    of its document, with the document's meta and an external id 'DOCUMENT#INDEX'."""
    texts = documents["text"].to_list()
    offsets = reader.token_offsets(texts) if unit.kind == "chunk" and reader is not None else [None] * len(texts)
    rows = []
    for doc_id, external_id, text, meta, doc_offsets in zip(
        documents["doc_id"].to_list(),
        documents["external_id"].to_list(),
        texts,
        documents["meta"].to_list(),
        offsets,
        strict=True,
    ):
        for index, (start, end) in enumerate(unit_spans(text, unit, doc_offsets)):
            unit_id = f"{external_id if external_id is not None else doc_id}#{index}"
            piece = text[start:end]
            rows.append((doc_id, index, start, end, unit_id, piece, meta, content_hash(piece, unit_id, meta)))
    schema = {
        "parent_doc_id": pl.Int64,
        "unit_index": pl.Int32,
        "char_start": pl.Int32,
        "char_end": pl.Int32,
        "external_id": pl.Utf8,
        "text": pl.Utf8,
        "meta": pl.Utf8,
        "content_hash": pl.Utf8,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


class ResolvedSae(NamedTuple):
    sae: SparseAutoencoder
    """The loaded SAE."""
    name: str
    """'default' or the path the user gave."""
    path: Path
    """Where it was loaded from."""
    fingerprint: str
    """Hash of its files: the same checkpoint registers once."""


def resolve_sae(spec: str = "default") -> ResolvedSae:
    """Load SAE `spec`: 'default' (shipped with saeembed) or a checkpoint path in any supported layout."""
    path = DEFAULT_SAE_DIR if spec == "default" else Path(spec).expanduser()
    if not path.exists():
        raise SaeembedError(f"SAE not found: {spec} (give 'default' or a checkpoint folder or file)")
    sae = load_sae(path)
    return ResolvedSae(sae, spec, path.resolve(), _fingerprint(path))


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha1()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if file.suffix in {".json", ".safetensors", ".npz", ".pth", ".pt"}:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
    return digest.hexdigest()


class EmbedSettings(NamedTuple):
    """What a worker needs to load the models of an embedding job: the SAE, and the reader as the job
    resolved it (its name, the layer, where and how it computes)."""

    sae: str
    """'default' or the SAE's path."""
    fingerprint: str
    """The hash of the SAE's files (`resolve_sae`): a worker whose files differ refuses to embed."""
    reader: str
    """The reader's name (alias, hub id, folder or .gguf)."""
    layer: int
    device: str
    dtype: str
    options: EmbedOptions
    threads: int | None = None
    """torch threads per worker (None: torch's default), so workers sharing a machine do not oversubscribe it."""


_WORKER_MODELS: dict[EmbedSettings, tuple[Reader, SparseAutoencoder]] = {}
"""The models of the last settings loaded in this process (one job at a time: earlier ones are let go)."""


def load_models(settings: EmbedSettings, resolved: ResolvedSae | None = None) -> tuple[Reader, SparseAutoencoder]:
    """The reader and SAE of `settings` (the SAE already `resolved`, where it is), checked against each other;
    loaded once per process, so a Dask worker keeps them between its tasks."""
    if settings not in _WORKER_MODELS:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        resolved = resolved or resolve_sae(settings.sae)
        if resolved.fingerprint != settings.fingerprint:
            raise SaeembedError(f"SAE {settings.sae} on this worker is not the one the embedding job loaded")
        reader = Reader.load(settings.reader, layer=settings.layer, device=settings.device, dtype=settings.dtype)
        check_compatible(
            resolved.sae, reader_model=reader.model_id, hidden_size=reader.hidden_size, layer=settings.layer
        )
        module = resolved.sae.to(reader.device)
        # On GPU the SAE takes the reader's dtype; on CPU it stays fp32 and bf16 runs through autocast.
        module = module.to(reader.dtype) if reader.device.type == "cuda" else module.float()
        _WORKER_MODELS.clear()
        _WORKER_MODELS[settings] = (reader, module)
    return _WORKER_MODELS[settings]


def embed_documents(db: str | Path, run_id: int, doc_ids: Sequence[int], settings: EmbedSettings) -> EmbedStats:
    """A worker's task: embed those of `doc_ids` that run `run_id` has not embedded yet into a shard. It only
    reads the database (and a rerun of the task skips what an earlier try published)."""
    reader, sae = load_models(settings)
    with Store.open(db, read_only=True) as store:
        return embed_pending(store, run_id, reader, sae, settings.options, limit=len(doc_ids), among=doc_ids)


def shares(doc_ids: Sequence[int], shard_docs: int) -> list[list[int]]:
    """Consecutive shares of `shard_docs` documents, in doc_id order: what one process embeds share by share
    (pending documents, `shard_docs` at a time) is what many workers embed, so the rows are the same."""
    ordered = sorted(int(d) for d in doc_ids)
    return [ordered[start : start + shard_docs] for start in range(0, len(ordered), shard_docs)]


@dataclass
class EmbedJob:
    """One `embed` invocation: what to embed with what, and where it stands."""

    store: Store
    run_id: int
    reader: Reader
    sae: SparseAutoencoder
    options: EmbedOptions
    pending: int
    """Documents left to embed when the job was opened."""
    settings: EmbedSettings
    """What workers load to embed for this job."""
    lease: ExitStack
    """Holds the run's lease (`Store.run_lease`) until `finish` or `close`: one job at a time adds to a run."""
    corpus: str
    """The corpus embedded: the one asked for, or its unit corpus ('CORPUS:sentence')."""

    @classmethod
    def open(
        cls,
        store: Store,
        corpus: str,
        *,
        sae: str = "default",
        reader: str | None = None,
        layer: int | None = None,
        device: Device = "auto",
        dtype: DType = "auto",
        options: EmbedOptions = EmbedOptions(),
        unit: str = "document",
    ) -> EmbedJob:
        """Check inputs, load reader and SAE, and open (or resume) the run for these settings; with a `unit`
        below the document, split the corpus into its unit corpus ('CORPUS:UNIT') and open that one's run."""
        unit_spec = parse_unit(unit)
        corpus_id = store.corpus_id(corpus)
        if unit_spec.is_document and store.unit_of_corpus(corpus_id) is not None:
            raise SaeembedError(f"'{corpus}' is a corpus of units: embed its documents with --unit")
        resolved = resolve_sae(sae)
        trained_on = resolved.sae.cfg.input_unit
        if trained_on not in (TOKEN_INPUT, str(unit_spec)):
            raise SaeembedError(f"SAE {sae} was trained on {trained_on} means: embed with --unit {trained_on}")
        sae_layer = layer if layer is not None else resolved.sae.cfg.layer
        if sae_layer is None:
            raise SaeembedError(f"SAE {sae} does not say which layer it reads: pass --layer")
        if resolved.sae.cfg.layer is not None and resolved.sae.cfg.layer != sae_layer:
            raise SaeembedError(f"SAE {sae} reads layer {resolved.sae.cfg.layer}, but --layer {layer} was given")
        reader_name = reader or resolved.sae.cfg.reader_model or DEFAULT_READER
        job_settings = EmbedSettings(sae, resolved.fingerprint, reader_name, sae_layer, device, dtype, options)
        loaded_reader, module = load_models(job_settings, resolved)
        sae_id = store.register_sae(
            name=resolved.name,
            fingerprint=resolved.fingerprint,
            path=str(resolved.path),
            config=asdict(resolved.sae.cfg),
        )
        load_shipped_labels(store, sae_id, resolved.path)
        if not unit_spec.is_document:
            corpus = split_units(store, corpus, unit_spec, loaded_reader)
            corpus_id = store.corpus_id(corpus)
        settings = RunSettings(
            corpus_id=corpus_id,
            sae_id=sae_id,
            reader_model=loaded_reader.model_id,
            layer=sae_layer,
            max_tokens=options.max_tokens,
            chat_template=options.chat_template,
            dtype=loaded_reader.dtype_name,
        )
        run_id = store.open_run(settings, {"device": str(loaded_reader.device), **asdict(options)})
        lease = ExitStack()
        lease.enter_context(store.run_lease(run_id, describe=f"an embedding of corpus '{corpus}'"))
        pending = store.count_pending(run_id)
        return cls(store, run_id, loaded_reader, module, options, pending, job_settings, lease, corpus)

    def embed_chunk(self, limit: int, on_batch: Callable[[int, int], None] | None = None) -> EmbedStats:
        """Embed up to `limit` pending documents into one shard (more when it takes over a minute)."""
        return embed_pending(
            self.store, self.run_id, self.reader, self.sae, self.options, limit=limit, on_batch=on_batch
        )

    def pending_shares(self, shard_docs: int) -> list[list[int]]:
        """The documents left to embed, as the shares workers embed (`shares`)."""
        return shares(self.store.pending_doc_ids(self.run_id), shard_docs)

    def close(self) -> None:
        """Give up the run's lease (`finish` does it too)."""
        self.lease.close()

    def finish(self, stats: EmbedStats) -> EmbedSummary:
        """Record the invocation on the run, give up its lease and summarise it."""
        config = {"device": str(self.reader.device), **asdict(self.options), "last_invocation": asdict(stats)}
        status = self.store.finish_run(self.run_id, config)
        self.close()
        if stats.documents:
            # Each concept's p90 over the run, kept for the diff's presence threshold and retrieval's
            # normaliser: computed once here, so the first analysis need not wait for it.
            concept_p90(self.store, self.run_id)
        mean_concepts = self.store.rows("run_size", {"run_id": self.run_id})["mean_concepts"][0]
        return EmbedSummary(
            run_id=self.run_id,
            status=status,
            documents=stats.documents,
            tokens=stats.tokens,
            tokens_per_second=round(stats.tokens / stats.seconds, 1) if stats.seconds else 0.0,
            truncated=stats.truncated,
            mean_concepts_per_doc=round(float(mean_concepts or 0.0), 1),
            seconds=round(stats.seconds, 1),
            reader=self.reader.model_id,
            layer=self.reader.layer,
            dtype=self.reader.dtype_name,
            device=str(self.reader.device),
            corpus=self.corpus,
        )


class EmbedSummary(NamedTuple):
    run_id: int
    """Key of the run in `embed_runs` (and in `doc_features`)."""
    status: str
    """'complete' when every document of the corpus is embedded."""
    documents: int
    """Documents embedded by this invocation (units, with --unit)."""
    tokens: int
    """Document tokens read by this invocation."""
    tokens_per_second: float
    """Document tokens per second, everything included (reader, SAE, pooling, writes)."""
    truncated: int
    """Documents longer than --max-tokens, cut."""
    mean_concepts_per_doc: float
    """Over all the run's documents so far."""
    seconds: float
    reader: str
    layer: int
    dtype: str
    device: str
    corpus: str
    """The corpus embedded: the one asked for, or with --unit its unit corpus ('CORPUS:sentence'), whose
    documents are the units."""


def embed(
    store: Store,
    corpus: str,
    *,
    sae: str = "default",
    reader: str | None = None,
    layer: int | None = None,
    device: Device = "auto",
    dtype: DType = "auto",
    options: EmbedOptions = EmbedOptions(),
    shard_docs: int = DEFAULT_SHARD_DOCS,
    on_batch: Callable[[int, int], None] | None = None,
    unit: str = "document",
) -> EmbedSummary:
    """Embed every not-yet-embedded document of `corpus` (resuming an interrupted run); with `unit`
    ('sentence', 'paragraph', 'chunk:N') every unit of its documents, into the unit corpus 'CORPUS:UNIT'."""
    job = EmbedJob.open(
        store, corpus, sae=sae, reader=reader, layer=layer, device=device, dtype=dtype, options=options, unit=unit
    )
    try:
        stats = EmbedStats()
        started = time.perf_counter()
        while (chunk := job.embed_chunk(shard_docs, on_batch)).documents:
            stats = stats + chunk
        return job.finish(replace(stats, seconds=time.perf_counter() - started))
    finally:
        job.close()


class TrainData(NamedTuple):
    train_texts: list[str]
    """Documents whose activations train the SAE."""
    heldout_texts: list[str]
    """Documents kept apart for the report."""
    documents: int
    """Documents in the corpus when it was split."""


def split_corpus(store: Store, corpus: str, *, heldout_docs: int, seed: int = 0) -> TrainData:
    """A corpus's texts in a seeded random order, the first `heldout_docs` held out (split by document,
    so no held-out token shares a document with a training token)."""
    corpus_id = store.corpus_id(corpus)
    texts = store.rows("jobs_shuffled_texts", {"corpus_id": corpus_id, "seed": seed})["text"].to_list()
    if len(texts) <= heldout_docs:
        raise SaeembedError(
            f"corpus '{corpus}' has {len(texts)} documents: too few to hold out {heldout_docs} and train on the rest"
        )
    return TrainData(texts[heldout_docs:], texts[:heldout_docs], len(texts))
