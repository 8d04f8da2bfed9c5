"""Self-contained HTML pages for analysis results: inline CSS and SVG, no scripts, no external resources,
so a report opens anywhere (and offline) exactly as written."""

from __future__ import annotations

from html import escape

import polars as pl

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%;margin-top:1em}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ex{font-size:12px;color:#444}.muted{color:#777}svg text{font:11px system-ui,sans-serif}
"""


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
            f"<td class='num'>{r['rank']}</td><td class='num'>{r['feature_id']}</td>"
            f"<td>{escape(r['label'] or '')}</td>"
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
