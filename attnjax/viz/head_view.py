"""An interactive attention head view in one self-contained HTML file (like BertViz).

Pick the attention (e.g. self or cross), the layer and the head (or the mean of the heads);
every query token on the left is joined to every key token on the right by a line whose
opacity is the attention weight. Hover a query token to see only its lines (and its weights
as numbers); hover a key token to see who attends to it. No network access, no libraries:
the data is embedded as JSON and drawn as SVG by a few lines of plain JavaScript.

    save_head_view("head_view.html", {
        "encoder self-attention": (weights_LHTS, tokens, tokens),
        "cross-attention": (cross_LHTS, target_tokens, source_tokens),
    })
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

View = tuple[np.ndarray, Sequence[str], Sequence[str]]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
 .controls { margin-bottom: 8px; } .controls label { margin-right: 12px; }
 text.tok { cursor: pointer; font-size: 13px; }
 text.tok.active { font-weight: bold; fill: #c0392b; }
 line.edge { stroke: #2c6fbb; } #info { min-height: 1.4em; color: #555; }
</style></head><body>
<h3>__TITLE__</h3>
<div class="controls">
 <label>attention <select id="view"></select></label>
 <label>layer <select id="layer"></select></label>
 <label>head <select id="head"></select></label>
</div>
<div id="info">hover a token</div>
<svg id="canvas" width="520" height="200"></svg>
<script>
const DATA = __DATA__;
const THRESHOLD = __THRESHOLD__;
const NS = "http://www.w3.org/2000/svg";
const state = {view: Object.keys(DATA)[0], layer: 0, head: 0, focus: null};
const $ = (id) => document.getElementById(id);
function options(select, values, labels) {
  select.innerHTML = "";
  values.forEach((v, i) => { const o = document.createElement("option");
    o.value = v; o.textContent = labels ? labels[i] : v; select.appendChild(o); });
}
function weights() {  // [T][S] of the chosen view, layer and head (or the mean of heads)
  const w = DATA[state.view].weights[state.layer];
  if (state.head !== "mean") return w[state.head];
  return w[0].map((row, i) => row.map((_, j) =>
    w.reduce((s, h) => s + h[i][j], 0) / w.length));
}
const GEOMETRY = {rowH: 22, top: 16, left: 140, right: 380};
function drawLabels() {  // once per view: labels keep their listeners while lines redraw
  const view = DATA[state.view], svg = $("canvas"), g = GEOMETRY;
  const n = Math.max(view.queries.length, view.keys.length);
  svg.setAttribute("height", g.top + g.rowH * n + 10);
  svg.innerHTML = "";
  const edges = document.createElementNS(NS, "g"); edges.id = "edges"; svg.appendChild(edges);
  const label = (text, x, y, anchor, side, index) => {
    const t = document.createElementNS(NS, "text");
    t.textContent = text; t.setAttribute("x", x); t.setAttribute("y", y);
    t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", "tok " + (side === "q" ? "query" : "key"));
    t.dataset.side = side; t.dataset.index = index;
    t.addEventListener("mouseenter", () => { state.focus = {side, index}; render(); });
    t.addEventListener("mouseleave", () => { state.focus = null; render(); });
    svg.appendChild(t);
  };
  view.queries.forEach((q, i) => label(q, g.left, g.top + g.rowH * i, "end", "q", i));
  view.keys.forEach((k, j) => label(k, g.right, g.top + g.rowH * j, "start", "k", j));
}
function render() {  // the lines of the current layer/head/focus, and the info line
  const view = DATA[state.view], w = weights(), svg = $("canvas"), g = GEOMETRY;
  const edges = $("edges");
  edges.innerHTML = "";
  const drawn = [];
  w.forEach((row, i) => row.forEach((a, j) => {
    if (a < THRESHOLD) return;
    if (state.focus && state.focus.side === "q" && state.focus.index !== i) return;
    if (state.focus && state.focus.side === "k" && state.focus.index !== j) return;
    const line = document.createElementNS(NS, "line");
    line.setAttribute("class", "edge");
    line.setAttribute("x1", g.left + 6); line.setAttribute("y1", g.top + g.rowH * i - 4);
    line.setAttribute("x2", g.right - 6); line.setAttribute("y2", g.top + g.rowH * j - 4);
    line.setAttribute("stroke-opacity", a.toFixed(4));
    line.setAttribute("stroke-width", (1 + 3 * a).toFixed(2));
    line.dataset.query = i; line.dataset.key = j; line.dataset.weight = a.toFixed(4);
    edges.appendChild(line); drawn.push(a);
  }));
  const focused = (t) => !!state.focus && state.focus.side === t.dataset.side
    && state.focus.index === +t.dataset.index;
  svg.querySelectorAll("text.tok").forEach((t) => t.classList.toggle("active", focused(t)));
  svg.dataset.lines = drawn.length;
  svg.dataset.total = drawn.reduce((s, a) => s + a, 0).toFixed(4);
  const head = state.head === "mean" ? "mean of heads" : "head " + state.head;
  let info = state.view + ", layer " + state.layer + ", " + head;
  if (state.focus && state.focus.side === "q") {
    const row = w[state.focus.index];
    const top3 = row.map((a, j) => [a, j]).sort((x, y) => y[0] - x[0]).slice(0, 3)
      .map(([a, j]) => view.keys[j] + " " + a.toFixed(2));
    info += ": " + view.queries[state.focus.index] + " \\u2192 " + top3.join(", ");
  }
  $("info").textContent = info;
}
function setView(name) {
  state.view = name; const w = DATA[name].weights;
  options($("layer"), w.map((_, l) => l));
  const heads = w[0].map((_, h) => h);
  options($("head"), [...heads, "mean"], [...heads.map((h) => "head " + h), "mean"]);
  state.layer = 0; state.head = 0; state.focus = null; drawLabels(); render();
}
options($("view"), Object.keys(DATA));
$("view").addEventListener("change", (e) => setView(e.target.value));
function fromFragment() {  // e.g. head_view.html#view=0&layer=3&head=1&query=11
  const want = new URLSearchParams(location.hash.slice(1));
  const name = Object.keys(DATA)[+(want.get("view") || 0)];
  if (name) { $("view").value = name; setView(name); }
  if (want.has("layer")) { state.layer = +want.get("layer"); $("layer").value = state.layer; }
  if (want.has("head")) {
    state.head = want.get("head") === "mean" ? "mean" : +want.get("head");
    $("head").value = state.head;
  }
  if (want.has("query")) state.focus = {side: "q", index: +want.get("query")};
  render();
}
window.addEventListener("hashchange", fromFragment);
$("layer").addEventListener("change", (e) => { state.layer = +e.target.value; render(); });
$("head").addEventListener("change", (e) => {
  state.head = e.target.value === "mean" ? "mean" : +e.target.value; render(); });
setView(state.view);
if (location.hash) fromFragment();
</script></body></html>
"""


def head_view_html(views: Mapping[str, View], *, title: str = "attnjax head view",
                   threshold: float = 0.01) -> str:
    """The HTML text of the head view.

    Args:
      views: ``{name: (weights [L, H, T, S], query_tokens [T], key_tokens [S])}``; e.g.
        self-attention with the same tokens on both sides, cross-attention with target
        tokens as queries and source tokens as keys.
      threshold: lines for weights below it are not drawn (keeps big maps light).
    """
    if not views:
        raise ValueError("head_view_html: `views` is empty")
    data = {}
    for name, (weights, queries, keys) in views.items():
        w = np.asarray(weights, np.float64)
        if w.ndim != 4 or w.shape[2:] != (len(queries), len(keys)):
            raise ValueError(
                f"head_view_html: view {name!r} weights must be [L, H, T={len(queries)}, "
                f"S={len(keys)}], got {list(w.shape)}")
        data[name] = {"weights": np.round(w, 4).tolist(), "queries": [str(q) for q in queries],
                      "keys": [str(k) for k in keys]}
    # "</" must not appear inside the <script> element.
    payload = json.dumps(data).replace("</", "<\\/")
    return (_TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__THRESHOLD__", repr(float(threshold)))
            .replace("__DATA__", payload))


def save_head_view(path: str | Path, views: Mapping[str, View], **kwargs) -> Path:
    """Write ``head_view_html(views, **kwargs)`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(head_view_html(views, **kwargs), encoding="utf-8")
    return path


def screenshot(page: str | Path, png: str | Path, *, fragment: str = "",
               size: tuple[int, int] = (900, 700), timeout: float = 60.0) -> Path | None:
    """PNG of an HTML file rendered by headless Chromium, or None when no ``chromium`` is
    installed (Debian: ``apt-get install chromium``) or it fails. No network is used.

    ``fragment`` selects the head view's state, e.g. ``"view=0&layer=3&head=1&query=11"``
    (a query index shows only that token's lines, as when hovering it)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                   f"--window-size={size[0]},{size[1]}", f"--screenshot={png}",
                   Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")]
        try:
            subprocess.run(command, capture_output=True, timeout=timeout, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
    return png if png.is_file() else None
