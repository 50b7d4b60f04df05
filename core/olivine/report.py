"""The short human summary printed at the end of a run (and saved as summary.txt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def human_size(total: float) -> str:
    """Bytes as B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.1f} {unit}" if unit != "B" else f"{int(total)} B"
        total /= 1024
    return ""


def render_summary(report: dict[str, Any], output_dir: Path | None, size_bytes: int = 0) -> str:
    """A few lines: status, one row per step, metrics, where the output and report are."""
    lines = [f"olivine run {report['run_id']}: {report['status']} in "
             f"{report.get('duration_s', 0):.1f} s ({report['accelerator']['device']}, "
             f"{report['accelerator']['execution_provider']})"]
    steps = report.get("steps", [])
    if steps:
        width = max(len(s["name"]) for s in steps)
        pwidth = max(len(s["pass"]) for s in steps)
        for i, s in enumerate(steps, 1):
            peak = s.get("peak_rss_mb")
            peak_text = f"{peak:,.0f} MiB peak" if isinstance(peak, int | float) else ""
            lines.append(f"  {i}. {s['name']:<{width}}  {s['pass']:<{pwidth}}  "
                         f"{s.get('status', '?'):<6}  {s.get('duration_s', 0):7.2f} s  {peak_text}")
    search = report.get("search")
    if search:
        cands = search.get("candidates", [])
        lines.append(f"  search ({search['sampler']}, {search['execution_order']}): {len(cands)} "
                     f"candidates, {search.get('failed', 0)} failed, "
                     f"{len(search.get('frontier', []))} on the Pareto frontier")
        best = next((c for c in cands if c["id"] == search.get("best")), None)
        if best:
            chosen = ", ".join(f"{k}={v}" for k, v in best["choice"].items())
            lines.append(f"  chosen: {best['id']} ({chosen})")
    for which, metrics in report.get("metrics", {}).items():
        flat = ", ".join(f"{m}-{k}={v:.4g}" for m, subs in metrics.items() for k, v in subs.items())
        lines.append(f"  {which.replace('_', ' ')}: {flat}")
    for goal in report.get("goals", []):
        mark = "met" if goal["met"] else "NOT met"
        lines.append(f"  goal {goal['metric']} {goal['goal']['type']} {goal['goal']['value']}: {mark}")
    if report.get("missed_goals"):
        lines.append("  goals missed: the output is published anyway, as Olive does without a "
                     "search (exit code 0)")
    if report.get("error"):
        lines.append(f"  error: {report['error']['message']}")
    if output_dir is not None:
        lines.append(f"  output: {output_dir} (model files: {human_size(size_bytes)})")
    return "\n".join(lines) + "\n"
