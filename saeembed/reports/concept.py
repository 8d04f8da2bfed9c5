"""A concept's page: its labels and where each was made, how strongly it fires across the corpus, its top
documents with every firing token marked, documents where it is absent, the concepts it fires with, and its
frequency by a meta column. Self-contained like every report (inline CSS and SVG, nothing fetched)."""

from __future__ import annotations

from html import escape

import polars as pl

from saeembed.analysis.lookup import ConceptProfile
from saeembed.concepts.provenance import is_scored
from saeembed.reports.html import STYLE, label_cell, marked

SNIPPET_CHARS = 300


def concept_report(profile: ConceptProfile) -> str:
    """The page of `profile` (see `saeembed.analysis.lookup.concept_profile`)."""
    view = profile.view
    current = view.labels.head(1).to_dicts()
    title = f"concept {view.feature_id}" + (f": {current[0]['label']}" if current else "")
    summary = {
        "corpus": view.corpus,
        "embedding run": view.run_id,
        "present in": f"{view.n_docs} of {view.corpus_docs} documents ({view.n_docs / max(view.corpus_docs, 1):.1%})",
    }
    header = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    sections = [
        _section("Labels", _labels(view.labels)),
        _section("How strongly it fires", histogram_chart(profile.histogram)),
        _section("Its strongest documents, every firing token marked", _documents(view.documents)),
        _section("Documents where it does not fire", _absent(profile.absent)),
        _section("Concepts it fires with (NPMI over the documents where each fires)", _cooccurring(profile)),
    ]
    if profile.by_column is not None:
        sections.append(_section(f"How often it fires by {profile.column}", _by_column(profile.by_column)))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{header}</table>"
        f"{''.join(sections)}</body></html>"
    )


def histogram_chart(histogram: pl.DataFrame, *, width: int = 720, height: int = 180) -> str:
    """Bars of documents per activation bin, as inline SVG; each bar carries its count (data-n) and a
    tooltip with its range."""
    rows = histogram.to_dicts()
    if not rows or sum(r["n"] for r in rows) == 0:
        return "<p class='muted'>It fires in no document of this run.</p>"
    pad, axis = 10, 18
    tallest = max(r["n"] for r in rows)
    bar = (width - 2 * pad) / len(rows)
    parts = [f"<svg width='{width}' height='{height + axis}' role='img' aria-label='activation histogram'>"]
    for i, r in enumerate(rows):
        h = (height - pad) * r["n"] / tallest
        parts.append(
            f"<rect class='bin' data-n='{r['n']}' x='{pad + i * bar:.1f}' y='{height - h:.1f}' "
            f"width='{max(bar - 2, 1):.1f}' height='{h:.1f}' fill='#2b6cb0' opacity='0.8'>"
            f"<title>{r['n']} documents with max activation in [{r['low']:.3g}, {r['high']:.3g})</title></rect>"
        )
    for i in (0, len(rows) // 2, len(rows)):
        value = rows[0]["low"] if i == 0 else rows[i - 1]["high"]
        parts.append(f"<text x='{pad + i * bar:.1f}' y='{height + axis - 4}' text-anchor='middle'>{value:.3g}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _section(heading: str, body: str) -> str:
    return f"<h2>{escape(heading)}</h2>{body}"


def _labels(labels: pl.DataFrame) -> str:
    if labels.height == 0:
        return "<p class='muted'>No label yet: <code>saeembed label --corpus NAME</code> makes token labels.</p>"
    rows = "".join(
        f"<tr><td>{escape(r['method'] or '')}</td><td>{escape(r['model'] or '')}</td>"
        f"<td>{escape(r['label'] or '')}<div class='ex'>{escape(r['description'] or '')}</div></td>"
        f"<td>{escape(r['label_source'] or '')}</td><td class='num'>{_score(r['auroc'])}</td>"
        f"<td class='num'>{_score(r['detection'])}</td><td>{escape(str(r['created_at']))}</td></tr>"
        for r in labels.to_dicts()
    )
    return (
        "<table class='labels'><tr><th>method</th><th>model</th><th>label</th><th>made from</th>"
        f"<th>AUROC</th><th>detection</th><th>made</th></tr>{rows}</table>"
        "<p class='muted'>The first row is the label the concept goes by in this corpus.</p>"
    )


def _documents(documents: pl.DataFrame) -> str:
    rows = "".join(
        f"<tr class='top-doc' data-doc='{r['doc_id']}'><td class='num'>{r['rank']}</td>"
        f"<td class='num'>{r['doc_id']}</td><td class='num'>{r['max_act']:.3g}</td>"
        f"<td class='ex'>{marked(r['marked'])}</td></tr>"
        for r in documents.to_dicts()
    )
    return f"<table><tr><th>rank</th><th>doc</th><th>max act.</th><th>text</th></tr>{rows}</table>"


def _absent(absent: pl.DataFrame) -> str:
    if absent.height == 0:
        return "<p class='muted'>It fires in every document sampled.</p>"
    rows = "".join(
        f"<tr><td class='num'>{r['doc_id']}</td><td class='ex'>{escape(_snippet(r['text']))}</td></tr>"
        for r in absent.to_dicts()
    )
    return f"<table><tr><th>doc</th><th>text</th></tr>{rows}</table>"


def _cooccurring(profile: ConceptProfile) -> str:
    if profile.cooccurring.height == 0:
        return "<p class='muted'>No concept shares enough of its documents.</p>"
    rows = "".join(
        f"<tr><td class='num'>{r['feature_id']}</td><td>{label_cell(r)}</td>"
        f"<td class='num'>{r['n_ab']}</td><td class='num'>{r['npmi']:.3f}</td></tr>"
        for r in profile.cooccurring.to_dicts()
    )
    return f"<table><tr><th>concept</th><th>label</th><th>documents with both</th><th>NPMI</th></tr>{rows}</table>"


def _by_column(by_column: pl.DataFrame) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(r['level']))}</td><td class='num'>{r['n']}</td><td class='num'>{r['present']}</td>"
        f"<td class='num'>{r['share']:.1%}</td>"
        f"<td><svg width='200' height='10'><rect width='{200 * r['share']:.1f}' height='10' fill='#2b6cb0'/>"
        "</svg></td></tr>"
        for r in by_column.to_dicts()
    )
    return (
        f"<table><tr><th>value</th><th>documents</th><th>where it fires</th><th>share</th><th></th></tr>{rows}</table>"
    )


def _score(value: float | None) -> str:
    return f"{value:.3f}" if is_scored(value) else ""


def _snippet(text: str) -> str:
    return text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
