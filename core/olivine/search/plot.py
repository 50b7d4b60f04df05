"""The frontier plot of a search: an HTML page (inline SVG, no dependencies) and a PNG.

The PNG needs matplotlib (``pip install olivine[plots]``); without it only the
HTML page is written and the log says so.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olivine.search.rank import Objective

log = logging.getLogger("olivine.search")


Point = tuple[str, float, float, bool]


def _points(objs: Sequence[Objective], candidates: list[dict[str, Any]]) -> list[Point]:
    out = []
    for i, c in enumerate(candidates):
        if c.get("status") != "succeeded":
            continue
        y = objs[0].value(c["metrics"])
        x = objs[1].value(c["metrics"]) if len(objs) > 1 else float(i + 1)
        out.append((c["id"], x, y, bool(c.get("on_frontier"))))
    return out


def write_frontier(folder: Path, objs: Sequence[Objective], candidates: list[dict[str, Any]],
                   best: str | None) -> None:
    """Write frontier.html and (with matplotlib) frontier.png into ``folder``."""
    points = _points(objs, candidates)
    if not points:
        return
    xlabel = objs[1].key if len(objs) > 1 else "candidate"
    ylabel = objs[0].key
    (folder / "frontier.html").write_text(_html(points, xlabel, ylabel, best))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: frontier.png skipped (frontier.html written)")
        return
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for cid, x, y, front in points:
        ax.scatter([x], [y], c="tab:red" if cid == best else ("tab:blue" if front else "tab:gray"),
                   s=60 if front else 25, zorder=3)
        ax.annotate(cid, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front_pts = sorted((x, y) for _, x, y, f in points if f)
    if len(front_pts) > 1:
        ax.plot(*zip(*front_pts), c="tab:blue", lw=1, zorder=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("search candidates (blue: Pareto frontier, red: chosen)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "frontier.png")
    plt.close(fig)


def _html(points: list[Point], xlabel: str, ylabel: str,
          best: str | None) -> str:
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    w, h, pad = 560, 360, 50

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (w - 2 * pad)

    def sy(y: float) -> float:
        return h - pad - (y - y0) / ((y1 - y0) or 1) * (h - 2 * pad)

    dots = []
    for cid, x, y, front in points:
        color = "#d62728" if cid == best else ("#1f77b4" if front else "#999")
        dots.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{6 if front else 4}" fill="{color}">'
                    f'<title>{html.escape(cid)}: {xlabel}={x:g}, {ylabel}={y:g}</title></circle>'
                    f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{html.escape(cid)}</text>')
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{x:g}</td><td>{y:g}</td><td>{'yes' if f else ''}"
                   f"</td></tr>" for c, x, y, f in points)
    return f"""<!doctype html><meta charset="utf-8"><title>olivine search frontier</title>
<h1>Search candidates</h1><p>Blue: Pareto frontier. Red: the chosen candidate.</p>
<svg width="{w}" height="{h}" style="border:1px solid #ccc">
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#333"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#333"/>
<text x="{w / 2}" y="{h - 12}" text-anchor="middle" font-size="12">{html.escape(xlabel)}</text>
<text x="14" y="{h / 2}" font-size="12" transform="rotate(-90 14 {h / 2})"
 text-anchor="middle">{html.escape(ylabel)}</text>
{''.join(dots)}</svg>
<table border="1" cellpadding="4"><tr><th>candidate</th><th>{html.escape(xlabel)}</th>
<th>{html.escape(ylabel)}</th><th>frontier</th></tr>{rows}</table>
"""
