"""Drawing a :class:`~mltrail.query.lineage.Lineage`: SVG written here, a self-contained HTML
page around it (inline CSS and a little JavaScript, nothing fetched: it opens offline), and PNG
through headless Chromium's screenshot when Chromium is installed.

The layout is a fixed grid: one column per node kind, left to right in the order of
:data:`mltrail.query.lineage.KINDS` (empty columns left out), nodes stacked in each column;
arrows between runs of the same column (forks, resumes) bend out to its right.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError
from mltrail.query.lineage import KINDS, Lineage, Node

logger = logging.getLogger("mltrail.lineage")

NODE_W, NODE_H = 230, 52
COL_GAP, ROW_GAP, MARGIN, HEADER = 90, 22, 24, 70
#: Fill and border of each kind.
COLORS = {
    "commit": ("#eef4ff", "#3b6fd8"),
    "snapshot": ("#f2ecff", "#7a4fd0"),
    "data": ("#e9f8ef", "#2e9a5b"),
    "run": ("#fff6e5", "#d08a12"),
    "checkpoint": ("#f3f3f3", "#7b7b7b"),
    "model": ("#e8f7fa", "#1f8fa6"),
    "version": ("#fdecef", "#c83a5a"),
}
TITLES = {
    "commit": "Commit",
    "snapshot": "Snapshot",
    "data": "Data (DVC)",
    "run": "Runs",
    "checkpoint": "Checkpoints",
    "model": "Logged model",
    "version": "Registered",
}
EDGE_COLORS = {"fork": "#d08a12", "resume": "#d08a12", "same-data": "#2e9a5b"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def layout(graph: Lineage) -> tuple[dict[str, tuple[float, float]], list[str], int, int]:
    """Top-left corner of every node, the kinds drawn (columns), and the picture's size."""
    columns = [k for k in KINDS if any(n.kind == k for n in graph.nodes)]
    stacks = {k: [n for n in graph.nodes if n.kind == k] for k in columns}
    if "run" in stacks:  # fork parents above the run, its forks and other runs below
        focus = f"run:{graph.run_id}"
        parents = {
            e.source for e in graph.edges if e.target == focus and e.source.startswith("run:")
        }
        stacks["run"].sort(key=lambda n: 0 if n.id in parents else 1 if n.id == focus else 2)
    rows = max((len(s) for s in stacks.values()), default=1)
    height = HEADER + MARGIN * 2 + rows * NODE_H + (rows - 1) * ROW_GAP
    width = MARGIN * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * COL_GAP + 60
    places: dict[str, tuple[float, float]] = {}
    for ci, kind in enumerate(columns):
        stack = stacks[kind]
        used = len(stack) * NODE_H + (len(stack) - 1) * ROW_GAP
        top = HEADER + MARGIN + (rows * NODE_H + (rows - 1) * ROW_GAP - used) / 2
        for ri, node in enumerate(stack):
            places[node.id] = (MARGIN + ci * (NODE_W + COL_GAP), top + ri * (NODE_H + ROW_GAP))
    return places, columns, width, height


def svg(graph: Lineage) -> str:
    """The picture as a standalone SVG document."""
    places, columns, width, height = layout(graph)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, '
        'sans-serif" font-size="12">',
        "<defs>",
        *(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>'
            for name, color in [("default", "#888"), *EDGE_COLORS.items()]
        ),
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for ci, kind in enumerate(columns):
        x = MARGIN + ci * (NODE_W + COL_GAP) + NODE_W / 2
        out.append(
            f'<text class="column" x="{x}" y="{MARGIN}" text-anchor="middle" font-weight="bold" '
            f'fill="#444">{_e(TITLES[kind])}</text>'
        )
    for index, edge in enumerate(graph.edges):
        if edge.source in places and edge.target in places:
            out.append(_edge(index, edge, places))
    for node in graph.nodes:
        out.append(_node(node, *places[node.id]))
    out.append("</svg>")
    return "\n".join(out)


def _edge(index: int, edge: Any, places: dict[str, tuple[float, float]]) -> str:
    (sx, sy), (tx, ty) = places[edge.source], places[edge.target]
    color = EDGE_COLORS.get(edge.kind, "#888")
    marker = edge.kind if edge.kind in EDGE_COLORS else "default"
    if sx == tx and abs(sy - ty) <= NODE_H + ROW_GAP:  # neighbours in a column: straight down
        x1 = x2 = sx + NODE_W / 2
        y1, y2 = (sy + NODE_H, ty) if sy < ty else (sy, ty + NODE_H)
        path = f"M{x1},{y1} L{x2},{y2}"
        lx, ly, anchor = x1 + 8, (y1 + y2) / 2 + 4, "start"
    elif sx == tx:  # runs of one column further apart: bend out to the right
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx + NODE_W, ty + NODE_H / 2
        bulge = x1 + 45 + min(abs(y2 - y1) / 6, 30)
        path = f"M{x1},{y1} C{bulge},{y1} {bulge},{y2} {x2},{y2}"
        lx, ly, anchor = bulge - 8, (y1 + y2) / 2, "start"
    elif tx - sx > NODE_W + COL_GAP:  # over a column: through the gaps and the band above the
        # boxes, never through one
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx, ty + NODE_H / 2
        g1, g2, band, r = x1 + 18 + (index % 4) * 6, x2 - 18 - (index % 4) * 6, HEADER - 8, 8
        path = (
            f"M{x1},{y1} L{g1 - r},{y1} Q{g1},{y1} {g1},{y1 - r} L{g1},{band + r} "
            f"Q{g1},{band} {g1 + r},{band} L{g2 - r},{band} Q{g2},{band} {g2},{band + r} "
            f"L{g2},{y2 - r} Q{g2},{y2} {g2 + r},{y2} L{x2},{y2}"
        )
        lx, ly, anchor = (g1 + g2) / 2, band - 4, "middle"
    else:
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx, ty + NODE_H / 2
        mid = (x1 + x2) / 2
        path = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
        lx, ly, anchor = mid, (y1 + y2) / 2 - 4, "middle"
    dash = ' stroke-dasharray="5,4"' if edge.kind == "same-data" else ""
    label = (
        f'<text x="{lx}" y="{ly}" text-anchor="{anchor}" fill="{color}" font-size="10" '
        f'paint-order="stroke" stroke="#fff" stroke-width="3">{_e(edge.label)}</text>'
        if edge.label
        else ""
    )
    return (
        f'<g class="edge edge-{_e(edge.kind)}" data-source="{_e(edge.source)}" '
        f'data-target="{_e(edge.target)}" data-kind="{_e(edge.kind)}" id="edge-{index}">'
        f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.6"{dash} '
        f'marker-end="url(#arrow-{marker})"/>{label}</g>'
    )


def _node(node: Node, x: float, y: float) -> str:
    fill, stroke = COLORS.get(node.kind, ("#fff", "#888"))
    width = 3 if node.focus else 1.4
    tip = "\n".join(f"{k}: {v}" for k, v in node.details.items() if v not in (None, "", {}, []))
    return (
        f'<g class="node kind-{node.kind}{" focus" if node.focus else ""}" '
        f'data-id="{_e(node.id)}" data-kind="{node.kind}" transform="translate({x},{y})" '
        'tabindex="0">'
        f"<title>{_e(tip)}</title>"
        f'<rect width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="{width}"/>'
        f'<text x="10" y="21" font-weight="bold" fill="#222">{_e(_cut(node.label, 30))}</text>'
        f'<text x="10" y="39" fill="#555" font-size="11">{_e(_cut(node.sub, 36))}</text>'
        "</g>"
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>mltrail lineage: {title}</title>
<style>
body {{ margin: 0; font-family: Helvetica, Arial, sans-serif; color: #222; display: flex; }}
main {{ flex: 1; overflow: auto; padding: 12px; }}
h1 {{ font-size: 16px; margin: 4px 0 10px; }}
aside {{ width: 340px; border-left: 1px solid #ddd; padding: 12px; font-size: 12px;
  height: 100vh; box-sizing: border-box; overflow: auto; background: #fafafa; }}
aside table {{ border-collapse: collapse; width: 100%; }}
aside td {{ border-bottom: 1px solid #eee; padding: 3px 4px; vertical-align: top;
  word-break: break-all; }}
aside td:first-child {{ color: #666; white-space: nowrap; word-break: normal; }}
.node {{ cursor: pointer; }}
.node:hover rect, .node.selected rect {{ filter: drop-shadow(0 1px 3px rgba(0,0,0,.35)); }}
.edge.dim {{ opacity: .15; }}
.node.dim {{ opacity: .35; }}
.legend {{ color: #666; font-size: 12px; margin-top: 8px; }}
</style></head>
<body>
<main>
<h1>Lineage of {title}</h1>
{svg}
<div class="legend">Click a box for its details. Arrows: code and data into the run, its
checkpoints, logged model and registered versions; forks and resumes between runs; dashed:
other runs on the same data hash.</div>
</main>
<aside id="details"><b>Details</b><p>Click a box.</p></aside>
<script type="application/json" id="lineage-data">{data}</script>
<script>
(function () {{
  var graph = JSON.parse(document.getElementById("lineage-data").textContent);
  var byId = {{}};
  graph.nodes.forEach(function (n) {{ byId[n.id] = n; }});
  var panel = document.getElementById("details");
  function cell(text) {{ var td = document.createElement("td"); td.textContent = text; return td; }}
  function show(id) {{
    var node = byId[id];
    panel.innerHTML = "";
    var head = document.createElement("b");
    head.textContent = node.label;
    panel.appendChild(head);
    var table = document.createElement("table");
    Object.keys(node.details).forEach(function (key) {{
      var value = node.details[key];
      if (value === null || value === "" ) return;
      var row = document.createElement("tr");
      row.appendChild(cell(key));
      row.appendChild(cell(typeof value === "object" ? JSON.stringify(value) : String(value)));
      table.appendChild(row);
    }});
    panel.appendChild(table);
    panel.dataset.shown = id;
  }}
  function highlight(id) {{
    var near = {{}};
    near[id] = true;
    document.querySelectorAll(".edge").forEach(function (e) {{
      var on = e.dataset.source === id || e.dataset.target === id;
      if (on) {{ near[e.dataset.source] = true; near[e.dataset.target] = true; }}
      e.classList.toggle("dim", id !== null && !on);
    }});
    document.querySelectorAll(".node").forEach(function (n) {{
      n.classList.toggle("dim", id !== null && !near[n.dataset.id]);
    }});
  }}
  document.querySelectorAll(".node").forEach(function (n) {{
    n.addEventListener("click", function () {{
      document.querySelectorAll(".node.selected").forEach(function (s) {{
        s.classList.remove("selected");
      }});
      n.classList.add("selected");
      show(n.dataset.id);
    }});
    n.addEventListener("mouseenter", function () {{ highlight(n.dataset.id); }});
    n.addEventListener("mouseleave", function () {{ highlight(null); }});
  }});
  var focus = document.querySelector(".node.focus");
  if (focus) show(focus.dataset.id);
  document.body.dataset.ready = String(graph.nodes.length);
}})();
</script>
</body></html>
"""


def page(graph: Lineage) -> str:
    """The picture as a self-contained HTML page (no network needed to open it)."""
    data = json.dumps(graph.as_dict(), default=str).replace("</", "<\\/")
    return PAGE.format(title=_e(graph.target), svg=svg(graph), data=data)


def write(graph: Lineage, output: str | os.PathLike[str]) -> Path:
    """Write the picture to ``output``: ``.html``, ``.svg`` or ``.png`` by its suffix.

    Raises:
        MltrailError: for another suffix, or a PNG without Chromium to draw it.
    """
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        path.write_text(page(graph), encoding="utf-8")
    elif suffix == ".svg":
        path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg(graph), encoding="utf-8")
    elif suffix == ".png":
        png(graph, path)
    else:
        raise MltrailError(f"{output}: the lineage is written as .html, .svg or .png.")
    return path


def chromium() -> str | None:
    """A Chromium (or Chrome) executable, from ``MLTRAIL_CHROMIUM`` or the PATH."""
    given = os.environ.get("MLTRAIL_CHROMIUM")
    if given:
        return given
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def png(graph: Lineage, path: Path) -> None:
    """A screenshot of the picture by headless Chromium (no Python dependency).

    Raises:
        MltrailError: when no Chromium is installed or it fails.
    """
    browser = chromium()
    if browser is None:
        raise MltrailError(
            "A PNG is drawn by headless Chromium, which is not installed (apt-get install "
            "chromium, or set MLTRAIL_CHROMIUM). Write --output lineage.html or lineage.svg "
            "instead."
        )
    _, _, width, height = layout(graph)
    with tempfile.TemporaryDirectory(prefix="mltrail-lineage-") as tmp:
        source = Path(tmp) / "lineage.html"
        source.write_text(
            '<!DOCTYPE html><html><body style="margin:0">' + svg(graph) + "</body></html>",
            encoding="utf-8",
        )
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={width},{height}",
            f"--screenshot={path.resolve()}",
            source.as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise MltrailError(f"Chromium could not draw the PNG ({error}).") from error
    if result.returncode != 0 or not path.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MltrailError(f"Chromium could not draw the PNG: {tail[0]}")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
