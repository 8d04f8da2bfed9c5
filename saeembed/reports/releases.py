"""The release-comparison page: how the top concepts moved across releases (a trend chart), then each
paired diff with its Δ chart and examples side by side. Self-contained like every report."""

from __future__ import annotations

from html import escape

import polars as pl

from saeembed.analysis.releases import ReleaseComparison
from saeembed.reports.html import STYLE, concept_cell, delta_chart, label_cell

PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#319795", "#4a5568", "#d53f8c", "#718096")


def trend_chart(trend: pl.DataFrame, *, width: int = 1000, height: int = 320) -> str:
    """One line per concept: its frequency in each release (x, in release order), as inline SVG."""
    if trend.height == 0:
        return "<p class='muted'>No concept to follow.</p>"
    releases = trend.select("release", "released_at").unique().sort("released_at")["release"].to_list()
    concepts = trend.select("feature_id", "label").unique("feature_id", maintain_order=True).rows()
    legend_width, pad, bottom = 300, 40, 30
    plot_w, plot_h = width - legend_width - 2 * pad, height - bottom - pad
    top_freq = max(float(trend["freq"].max() or 0.0), 0.01)

    def x(i: int) -> float:
        return pad + (i / max(len(releases) - 1, 1)) * plot_w

    def y(freq: float) -> float:
        return pad + plot_h * (1 - freq / top_freq)

    parts = [f"<svg width='{width}' height='{height}' role='img' aria-label='concept frequency per release'>"]
    for tick in (0.0, top_freq / 2, top_freq):
        parts.append(
            f"<line x1='{pad}' y1='{y(tick):.1f}' x2='{pad + plot_w}' y2='{y(tick):.1f}' stroke='#eee'/>"
            f"<text x='{pad - 4}' y='{y(tick) + 4:.1f}' text-anchor='end'>{tick:.0%}</text>"
        )
    for i, release in enumerate(releases):
        parts.append(f"<text x='{x(i):.1f}' y='{height - 8}' text-anchor='middle'>{escape(release)}</text>")
    for n, (feature_id, label) in enumerate(concepts):
        colour = PALETTE[n % len(PALETTE)]
        rows = dict(trend.filter(pl.col("feature_id") == feature_id).select("release", "freq").rows())
        points = " ".join(f"{x(i):.1f},{y(rows.get(r, 0.0)):.1f}" for i, r in enumerate(releases))
        parts.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2'/>")
        parts += [
            f"<circle cx='{x(i):.1f}' cy='{y(rows.get(r, 0.0)):.1f}' r='3' fill='{colour}'/>"
            for i, r in enumerate(releases)
        ]
        legend_y = pad + n * 16
        name = escape(f"{feature_id} {label or ''}"[:40])
        parts.append(
            f"<rect x='{width - legend_width + 10}' y='{legend_y - 9}' width='10' height='10' fill='{colour}'/>"
            f"<text x='{width - legend_width + 26}' y='{legend_y}'>{name}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def releases_report(title: str, result: ReleaseComparison) -> str:
    """The page for one release comparison."""
    steps = result.steps.to_dicts()
    summary = "".join(
        f"<tr><td>{escape(s['model'])}</td><td>{escape(s['release'])}</td>"
        f"<td>{escape(s['against'])} ({escape(s['against_kind'])})</td><td class='num'>{s['pairs']}</td>"
        f"<td class='num'>{s['rising']}</td><td class='num'>{s['falling']}</td></tr>"
        for s in steps
    )
    sections = []
    for s in steps:
        part = result.changes.filter(pl.col("diff_id") == s["diff_id"])
        rows = "".join(
            f"<tr><td class='num'>{r['rank']}</td>{concept_cell(r['feature_id'])}"
            f"<td>{label_cell(r)}</td><td class='num'>{r['freq_a']:.2f}</td>"
            f"<td class='num'>{r['freq_b']:.2f}</td><td class='num'>{r['delta']:+.3f}</td>"
            f"<td class='num'>{r['q_value']:.2g}</td>"
            f"<td class='ex'>{escape(r['example_a'] or '')}</td><td class='ex'>{escape(r['example_b'] or '')}</td></tr>"
            for r in part.to_dicts()
        )
        sections.append(
            f"<h2>{escape(s['model'])} {escape(s['release'])} vs {escape(s['against'])} ({escape(s['against_kind'])})"
            f"</h2><p class='muted'>{s['pairs']} prompts answered by both; {s['rising']} concepts rose and "
            f"{s['falling']} fell significantly (McNemar, BH q &lt; 0.05). Diff analysis {s['diff_id']}.</p>"
            f"{delta_chart(part)}<table><tr><th>rank</th><th>concept</th><th>label</th>"
            f"<th>{escape(s['release'])}</th><th>{escape(s['against'])}</th><th>Δ</th><th>q</th>"
            f"<th>example, {escape(s['release'])}</th><th>example, {escape(s['against'])}</th></tr>{rows}</table>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"<p class='muted'>Analysis {result.analysis_id}. Each release is compared with the previous one and "
        "with the baseline, on the prompts both answered.</p>"
        "<h2>Top concepts across releases</h2>"
        f"{trend_chart(result.trend)}"
        "<table><tr><th>model</th><th>release</th><th>against</th><th>pairs</th><th>rising</th><th>falling</th></tr>"
        f"{summary}</table>{''.join(sections)}</body></html>"
    )
