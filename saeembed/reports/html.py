"""Self-contained HTML pages for analysis results: inline CSS and SVG, no scripts, no external resources,
so a report opens anywhere (and offline) exactly as written."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import polars as pl

from saeembed.concepts.provenance import is_scored

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%;margin-top:1em}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ex{font-size:12px;color:#444}.muted{color:#777}svg text{font:11px system-ui,sans-serif}
mark{background:#ffe08a;padding:0 1px}
"""


def write_report(path: str | Path, page: str) -> Path:
    """Write `page` to `path` (its folder made if missing); the absolute path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target.resolve()


def delta_chart(table: pl.DataFrame, *, width: int = 1000, row_height: int = 18) -> str:
    """Horizontal bars of Δ = freq_a − freq_b per concept with 95% CI whiskers, as inline SVG."""
    rows = table.select("feature_id", "label", "delta", "ci_low", "ci_high").to_dicts()
    if not rows:
        return "<p class='muted'>No concept passed the filters.</p>"
    label_width, pad = 320, 10
    plot = width - label_width - 2 * pad
    extent = max(max(abs(r["ci_low"]), abs(r["ci_high"]), abs(r["delta"])) for r in rows) or 1.0

    def x(value: float) -> float:
        return label_width + pad + (value + extent) / (2 * extent) * plot

    height = row_height * len(rows) + 30
    parts = [f"<svg width='{width}' height='{height}' role='img' aria-label='delta with confidence intervals'>"]
    zero = x(0)
    parts.append(f"<line x1='{zero:.1f}' y1='0' x2='{zero:.1f}' y2='{height - 20}' stroke='#999'/>")
    for i, r in enumerate(rows):
        y = i * row_height + 4
        colour = "#2b6cb0" if r["delta"] >= 0 else "#c05621"
        left, right = sorted((zero, x(r["delta"])))
        name = escape(f"{r['feature_id']} {r['label'] or ''}"[:48])
        parts += [
            f"<text x='{label_width - 4}' y='{y + 11}' text-anchor='end'>{name}</text>",
            f"<rect x='{left:.1f}' y='{y + 2}' width='{max(right - left, 1):.1f}' height='{row_height - 6}' "
            f"fill='{colour}' opacity='0.75'/>",
            f"<line x1='{x(r['ci_low']):.1f}' y1='{y + row_height / 2 - 1}' x2='{x(r['ci_high']):.1f}' "
            f"y2='{y + row_height / 2 - 1}' stroke='#111' stroke-width='1.5'/>",
        ]
    axis_y = height - 8
    for tick in (-extent, -extent / 2, 0.0, extent / 2, extent):
        parts.append(f"<text x='{x(tick):.1f}' y='{axis_y}' text-anchor='middle'>{tick:+.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def concept_cell(feature_id: int) -> str:
    """A table cell holding a concept id, marked (data-concept) so `link_concepts` can link it to its page."""
    return f"<td class='num concept' data-concept='{int(feature_id)}'>{int(feature_id)}</td>"


CONCEPT_CELL = re.compile(r"<td class='num concept' data-concept='(\d+)'>\d+</td>")
"""`concept_cell`'s markup (only saeembed writes it, so a pattern finds every one)."""


def listed_concepts(page: str) -> list[int]:
    """The concept ids a page's tables list (its `concept_cell`s), each once, in order of first appearance."""
    return list(dict.fromkeys(int(found) for found in CONCEPT_CELL.findall(page)))


def link_concepts(page: str, hrefs: dict[int, str]) -> str:
    """`page` with each concept cell whose id `hrefs` names linked to that address."""

    def linked(match: re.Match) -> str:
        feature_id = int(match.group(1))
        if feature_id not in hrefs:
            return match.group(0)
        return (
            f"<td class='num concept' data-concept='{feature_id}'>"
            f"<a href='{escape(hrefs[feature_id])}'>{feature_id}</a></td>"
        )

    return CONCEPT_CELL.sub(linked, page)


def label_cell(row: dict, suffix: str = "") -> str:
    """A concept's label (column label + suffix), and below it where the label was made, its score and the
    tokens the concept peaks on in this corpus, as far as the row says (see concepts.provenance)."""
    label = escape(row.get("label" + suffix) or "")
    source, score = row.get("label_source" + suffix), row.get("label_score" + suffix)
    peaks = row.get("peak_tokens" + suffix)
    notes = []
    if source:
        notes.append(f"label: {escape(source)}" + (f", score {score:.2f}" if is_scored(score) else ""))
    if peaks:
        notes.append(f"fires here on: {escape(peaks)}")
    return label + "".join(f"<div class='muted ex'>{note}</div>" for note in notes)


def diff_report(title: str, summary: dict[str, object], table: pl.DataFrame) -> str:
    """A page with the analysis's parameters, the Δ chart and the table with examples from each side."""
    header = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    groups = table["grp"].unique(maintain_order=True).to_list() if "grp" in table.columns else [None]
    sections = []
    for group in groups:
        part = table if group is None else table.filter(pl.col("grp") == group)
        heading = "" if group is None else f"<h2>{escape(str(group))} vs the rest</h2>"
        body = "".join(
            "<tr>"
            f"<td class='num'>{r['rank']}</td>{concept_cell(r['feature_id'])}"
            f"<td>{label_cell(r)}</td>"
            f"<td class='num'>{r['freq_a']:.3f}</td><td class='num'>{r['freq_b']:.3f}</td>"
            f"<td class='num'>{r['delta']:+.3f}</td>"
            f"<td class='num'>[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]</td>"
            f"<td class='num'>{r['q_value']:.2g}</td>"
            f"<td class='ex'>{escape(r.get('example_a') or '')}</td>"
            f"<td class='ex'>{escape(r.get('example_b') or '')}</td>"
            "</tr>"
            for r in part.to_dicts()
        )
        sections.append(
            f"{heading}{delta_chart(part)}<table><tr><th>rank</th><th>concept</th><th>label</th><th>freq A</th>"
            "<th>freq B</th><th>Δ</th><th>95% CI</th><th>q</th><th>example A</th><th>example B</th></tr>"
            f"{body}</table>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{header}</table>"
        f"{''.join(sections)}</body></html>"
    )


def marked(text: str | None) -> str:
    """`text` escaped, its «marked» spans shown as <mark>."""
    return re.sub(r"«(.*?)»", r"<mark>\1</mark>", escape(text or ""), flags=re.DOTALL)


def match_report(title: str, summary: dict[str, object], matches: pl.DataFrame) -> str:
    """A concept matching's page: how universal the two spaces are, then each matched pair side by side,
    both labels and each concept's strongest document with its peak token marked."""
    header = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    body = "".join(
        "<tr>"
        f"{concept_cell(r['feature_a'])}<td>{label_cell(r, '_a')}"
        f"<div class='ex'>{_example(r['example_a'])}</div></td>"
        f"<td class='num'>{r['score']:.3f}</td>"
        f"<td class='num'>{r['feature_b']}</td><td>{label_cell(r, '_b')}"
        f"<div class='ex'>{_example(r['example_b'])}</div></td>"
        f"<td class='num'>{'' if r['runner_up'] is None else r['runner_up']}</td>"
        f"<td class='num'>{'' if r['runner_up_score'] is None else format(r['runner_up_score'], '.3f')}</td>"
        "</tr>"
        for r in matches.to_dicts()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{header}</table>"
        "<table class='pairs'><tr><th>concept A</th><th>label and strongest document in A</th><th>score</th>"
        "<th>best in B</th><th>label and strongest document in B</th><th>runner-up</th><th>its score</th></tr>"
        f"{body}</table></body></html>"
    )


def _example(text: str | None) -> str:
    return marked(text) if text else "<span class='muted'>fires in no document of this run</span>"


# Okabe–Ito's colour-blind-safe palette (Okabe & Ito 2008), then Tableau's; cycled past 15 clusters.
CLUSTER_COLOURS = (
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#d62728",
)
NOISE_COLOUR = "#b0b0b0"


def cluster_colour(cluster: int) -> str:
    """The colour of a cluster in maps and tables: grey for noise (-1)."""
    return NOISE_COLOUR if cluster < 0 else CLUSTER_COLOURS[cluster % len(CLUSTER_COLOURS)]


def cluster_map(assignments: pl.DataFrame, *, width: int = 720, height: int = 520) -> str:
    """The documents' 2-D map (x, y) as an inline SVG scatter, coloured by cluster, noise grey; each point's
    tooltip names its document and cluster. Documents without coordinates are left out."""
    points = assignments.filter(pl.col("x").is_not_null() & pl.col("y").is_not_null())
    if points.height == 0:
        return "<p class='muted'>No 2-D map: too few documents were clustered (or mapping was turned off).</p>"
    pad = 12
    xs, ys = points["x"], points["y"]
    x_low, y_low = xs.min(), ys.min()
    x_span, y_span = (xs.max() - x_low) or 1.0, (ys.max() - y_low) or 1.0
    parts = [
        f"<svg width='{width}' height='{height}' role='img' aria-label='2-D map of the documents by cluster'>",
        f"<rect x='0' y='0' width='{width}' height='{height}' fill='#fafafa' stroke='#ddd'/>",
    ]
    # Noise first, so clustered points are drawn over it.
    for row in points.sort(pl.col("cluster") >= 0).to_dicts():
        px = pad + (row["x"] - x_low) / x_span * (width - 2 * pad)
        py = height - pad - (row["y"] - y_low) / y_span * (height - 2 * pad)
        name = "noise" if row["cluster"] < 0 else f"cluster {row['cluster']}"
        parts.append(
            f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3' fill='{cluster_colour(row['cluster'])}' opacity='0.8'>"
            f"<title>document {row['doc_id']}: {name}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def cluster_report(
    title: str,
    summary: dict[str, object],
    concepts: pl.DataFrame,
    summaries: pl.DataFrame,
    assignments: pl.DataFrame,
) -> str:
    """A page with the clustering's parameters, the selected concepts, the 2-D map and, per cluster, its top
    concepts and typical documents (the columns of `ClusterResult`'s fields of the same names)."""
    header = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    selected = "".join(
        f"<tr>{concept_cell(r['feature_id'])}<td>{label_cell(r)}</td>"
        f"<td class='num'>{_number(r.get('similarity'))}</td><td class='num'>{_number(r.get('freq'))}</td></tr>"
        for r in concepts.to_dicts()
    )
    total = assignments.height
    without = assignments.filter(~pl.col("has_concepts")).height
    sections = []
    for r in summaries.to_dicts():
        name = "Noise" if r["cluster"] < 0 else f"Cluster {r['cluster']}"
        swatch = f"<span style='color:{cluster_colour(r['cluster'])}'>●</span>"
        top = "".join(
            f"<tr>{concept_cell(c['feature_id'])}<td>{label_cell(c)}</td>"
            f"<td class='num'>{c['freq_in']:.3f}</td><td class='num'>{c['freq_out']:.3f}</td>"
            f"<td class='num'>{c['delta']:+.3f}</td></tr>"
            for c in r["top_concepts"]
        )
        typical = "".join(
            f"<li><span class='muted'>{d['doc_id']}</span> <span class='ex'>{escape(d['text'])}</span></li>"
            for d in r["typical_docs"]
        )
        sections.append(
            f"<h2>{swatch} {name}: {r['size']} documents ({r['size'] / max(total, 1):.1%})</h2>"
            "<table><tr><th>concept</th><th>label</th><th>freq in</th><th>freq out</th><th>Δ</th></tr>"
            f"{top}</table><p>Most typical documents:</p><ol>{typical}</ol>"
        )
    note = (
        f"<p>{without} of {total} documents have none of the selected concepts: they are not clustered.</p>"
        if without
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{header}</table>"
        "<h2>Selected concepts</h2><table><tr><th>concept</th><th>label</th><th>similarity</th><th>freq</th></tr>"
        f"{selected}</table><h2>Map</h2>{cluster_map(assignments)}{note}{''.join(sections)}</body></html>"
    )
