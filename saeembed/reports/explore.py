"""The explore page: one self-contained HTML file (plotly.js inlined, nothing fetched) with the corpus's map.
Hovering or clicking a point shows its document with its strongest concepts and the peak token «marked»; a
box or lasso selection lists the concepts present in more of the selected documents than of the rest; a
search box over the concepts' labels lights up the documents where the chosen concept is present.

Plotly draws the map and handles hover, zoom and selection (a well-kept library that works offline once its
script is inlined, and draws 10,000 SVG points in well under the 2 s an analyst waits; docs/explore.md);
the shares of a selection are computed in the page, from each document's present concepts, so no server is
needed. `window.saeembed` is the page's API: what the browser tests (and a notebook) drive it by.
"""

from __future__ import annotations

import json
from html import escape

from saeembed.analysis.explore import ExploreMap
from saeembed.reports.html import CLUSTER_COLOURS, STYLE

SELECTION_CONCEPTS = 15
"""Concepts listed for a selection."""

PAGE_STYLE = """
#wrap{display:flex;gap:16px;align-items:flex-start}#map{width:720px;height:620px;flex:none}
#side{flex:1;min-width:300px}#doc{border:1px solid #ddd;padding:8px;min-height:80px;margin-bottom:12px}
#selected li,#found li{margin:2px 0}#found button{font:inherit;cursor:pointer}
.share{color:#555;font-size:12px}input#search{width:100%;padding:4px;font:inherit}
"""

SCRIPT = """
const D = JSON.parse(document.getElementById('explore-data').textContent);
const N = D.doc_id.length;
const indexOf = new Map(D.doc_id.map((d, i) => [d, i]));
const api = {ready: false, listed: [], shown: null, highlighted: null};
window.saeembed = api;

function name(id) {
  const entry = D.concepts[id];
  return entry && entry[0] ? entry[0] + ' [' + entry[1] + ']' : 'concept ' + id;
}
function marked(parent, text) {
  text.split(/(«[^»]*»)/).forEach(part => {
    if (part.startsWith('«') && part.endsWith('»')) {
      const mark = document.createElement('mark'); mark.textContent = part.slice(1, -1); parent.appendChild(mark);
    } else { parent.appendChild(document.createTextNode(part)); }
  });
}
function groups() {
  if (D.color_kind !== 'categories') {
    const trace = {type: 'scatter', mode: 'markers', x: D.x, y: D.y, customdata: D.doc_id.map((_, i) => i),
      hoverinfo: 'none', name: 'documents', marker: {size: 5, opacity: 0.8}};
    if (D.color_kind === 'values') {
      Object.assign(trace.marker, {color: D.color, colorscale: 'Viridis', showscale: true,
        colorbar: {title: {text: D.color_by}}});
    }
    return [trace];
  }
  const members = new Map();
  D.color.forEach((value, i) => {
    const key = value === null ? '(none)' : String(value);
    if (!members.has(key)) members.set(key, []);
    members.get(key).push(i);
  });
  const keys = [...members.keys()].sort((a, b) => members.get(b).length - members.get(a).length || (a < b ? -1 : 1));
  return keys.map((key, k) => ({type: 'scatter', mode: 'markers', name: key, hoverinfo: 'none',
    x: members.get(key).map(i => D.x[i]), y: members.get(key).map(i => D.y[i]), customdata: members.get(key),
    marker: {size: 5, opacity: 0.8, color: PALETTE[k % PALETTE.length]}}));
}
function show(i) {
  const panel = document.getElementById('doc');
  panel.replaceChildren();
  const head = document.createElement('div');
  head.textContent = 'document ' + D.doc_id[i] + (D.color[i] === null ? '' : ' · ' + D.color[i]);
  head.className = 'muted'; panel.appendChild(head);
  const body = document.createElement('p'); marked(body, D.marked[i] || D.text[i]); panel.appendChild(body);
  const list = document.createElement('ul');
  D.top[i].forEach(id => {
    const li = document.createElement('li'); li.textContent = id + ': ' + name(id); list.appendChild(li);
  });
  panel.appendChild(list);
  api.shown = D.doc_id[i];
}
function select(indices) {
  const inside = new Map();
  indices.forEach(i => D.present[i].forEach(id => inside.set(id, (inside.get(id) || 0) + 1)));
  const n = indices.length, rest = Math.max(N - n, 1);
  const rows = [...inside.entries()].map(([id, k]) => {
    const share = k / n, other = (D.concepts[id][2] - k) / rest;
    return {id: Number(id), share, other, delta: share - other};
  }).filter(r => r.delta > 0).sort((a, b) => b.delta - a.delta || a.id - b.id).slice(0, SELECTION_CONCEPTS);
  const list = document.getElementById('selected');
  list.replaceChildren();
  rows.forEach(r => {
    const li = document.createElement('li'); li.dataset.feature = r.id;
    li.textContent = r.id + ': ' + name(r.id) + ' ';
    const share = document.createElement('span'); share.className = 'share';
    share.textContent =
      (100 * r.share).toFixed(0) + '% of the selection, ' + (100 * r.other).toFixed(0) + '% of the rest';
    li.appendChild(share); list.appendChild(li);
  });
  document.getElementById('selection-size').textContent = n + ' documents selected';
  api.listed = rows.map(r => r.id);
}
function highlight(id) {
  const map = document.getElementById('map');
  const opacity = map.data.map(trace => trace.customdata.map(i => D.present[i].includes(id) ? 1 : 0.08));
  Plotly.restyle(map, {'marker.opacity': opacity});
  api.highlighted = id;
  const n = D.present.filter(p => p.includes(id)).length;
  document.getElementById('lit').textContent = name(id) + ': present in ' + n + ' documents';
  return n;
}
function search(text) {
  const query = text.trim().toLowerCase();
  const found = document.getElementById('found');
  found.replaceChildren();
  if (!query) return [];
  const hits = Object.entries(D.concepts).filter(([, c]) => c[0] && c[0].toLowerCase().includes(query))
    .sort((a, b) => b[1][2] - a[1][2]).slice(0, 20);
  hits.forEach(([id]) => {
    const li = document.createElement('li'); const button = document.createElement('button');
    button.textContent = id + ': ' + name(id); button.onclick = () => highlight(Number(id));
    li.appendChild(button); found.appendChild(li);
  });
  return hits.map(([id]) => Number(id));
}
api.points = () => N;
api.show = docId => show(indexOf.get(docId));
api.select = docIds => select(docIds.filter(d => indexOf.has(d)).map(d => indexOf.get(d)));
api.highlight = highlight;
api.search = search;
document.getElementById('search').addEventListener('input', e => search(e.target.value));
const layout = {dragmode: 'lasso', hovermode: 'closest', margin: {l: 20, r: 20, t: 20, b: 20},
  xaxis: {visible: false}, yaxis: {visible: false}, legend: {itemsizing: 'constant'}};
Plotly.newPlot('map', groups(), layout, {displaylogo: false, responsive: false}).then(map => {
  map.on('plotly_hover', e => show(e.points[0].customdata));
  map.on('plotly_click', e => show(e.points[0].customdata));
  map.on('plotly_selected', e => select(e ? e.points.map(p => p.customdata) : []));
  api.ready = true;
});
"""


def explore_page(found: ExploreMap, *, title: str | None = None) -> str:
    """The page of `found` (plotly.js inlined from the plotly package: ≈ 4.8 MB of the page)."""
    from plotly.offline import get_plotlyjs

    title = title or f"saeembed explore {found.corpus}"
    points = found.points
    data = {
        "doc_id": points["doc_id"].to_list(),
        "x": [round(v, 4) for v in points["x"].to_list()],
        "y": [round(v, 4) for v in points["y"].to_list()],
        "color": points["color"].to_list(),
        "text": points["text"].to_list(),
        "marked": points["marked"].to_list(),
        "top": points["top"].to_list(),
        "present": points["present"].to_list(),
        "concepts": {str(f): [label, source, n] for f, label, source, n in found.concepts.iter_rows()},
        "color_kind": found.color_kind,
        "color_by": found.color_by,
    }
    summary = {
        "corpus": found.corpus,
        "embedding run": found.run_id,
        "placed by": f"UMAP of {found.representation}",
        "documents": f"{points.height:,} on the map"
        + (f", {found.n_unmapped:,} without those concepts" if found.n_unmapped else ""),
        "coloured by": found.color_by or "nothing",
    }
    header = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    # Inside <script>, "</" would end the element early: JSON escapes it as "<\\/".
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    constants = f"const PALETTE = {json.dumps(list(CLUSTER_COLOURS))}; const SELECTION_CONCEPTS = {SELECTION_CONCEPTS};"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}{PAGE_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>{escape(title)}</h1><table>{header}</table>"
        "<p class='muted'>Hover or click a point to read its document; draw a lasso or box (toolbar) to list the "
        "concepts the selected documents have more often than the rest; search the concepts' labels to light "
        "up the documents where one is present.</p>"
        "<div id='wrap'><div id='map'></div><div id='side'><div id='doc' class='ex'>Hover over a point.</div>"
        "<h2>Selection</h2><p id='selection-size' class='muted'>Nothing selected.</p><ol id='selected'></ol>"
        "<h2>Find a concept</h2><input id='search' type='search' placeholder='a word of a label, e.g. game'>"
        "<p id='lit' class='muted'></p><ul id='found'></ul></div></div>"
        f"<script id='explore-data' type='application/json'>{payload}</script>"
        f"<script>{constants}{SCRIPT}</script></body></html>"
    )
