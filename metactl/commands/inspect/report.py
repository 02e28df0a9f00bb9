"""Write an inspection: ``report.json``, the PNGs, and (``--format html``) one self-contained page.

Output directory (default ``RUN_DIR/inspect/task-<seed>/``)::

    report.json       every number in the report (redraw or post-process from it)
    decisions.png     the policy's controls: tool x layer group x phase
    learning.png      each score part over training, baselines as lines
    attribution.png   Shapley values over tools and layer groups, phase leave-one-out
    order.png         phases swapped / a tool's phases merged, retrained
    why.png           observation features x controls saliency, per decision
    implantation.png  interference, CKA drift and per-layer behaviour readout
    report.html       all of the above in one file, images embedded (--format html)
    jobs.jsonl        the retrained variants' scores (a rerun resumes from them)
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from metactl.commands.inspect.plots import draw_all
from metactl.commands.inspect.tables import all_tables, render_text
from metactl.errors import ConfigError, did_you_mean
from metactl.rundir import atomic_write_text

FORMATS = ("table", "json", "html")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}.{did_you_mean(fmt, FORMATS)}")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def write_report(report: dict, out: Path, fmt: str = "table") -> dict[str, Path]:
    """Write report.json and the PNGs (and report.html for ``html``); the paths written."""
    out = Path(out)
    report = _jsonable(report)
    paths = {"json": atomic_write_text(out / "report.json", json.dumps(report, indent=1, sort_keys=False) + "\n")}
    pngs = draw_all(report, out)
    paths.update(pngs)
    if fmt == "html":
        paths["html"] = atomic_write_text(out / "report.html", render_html(report, pngs))
    return paths


def render_terminal(report: dict) -> str:
    parts = [(f"metactl inspect {report['run_dir']} (policy {report['policy']}, task {report['task_seed']}, "
             f"{report['model']}, {report['seconds']:.0f} s)")]
    for section, tables in all_tables(report).items():
        parts.append(f"\n== {section} ==")
        parts += [render_text(t) + "\n" for t in tables]
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-top:.6em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0 1.2em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left} caption{text-align:left;font-weight:600;padding:4px 0}
img{max-width:100%;border:1px solid #eee} .meta{color:#555}
"""


def render_html(report: dict, pngs: dict[str, Path]) -> str:
    e = html.escape
    body = [f"<h1>metactl inspect: {e(report['policy'])} on task {report['task_seed']}</h1>",
            (f"<p class='meta'>run {e(report['run_dir'])}<br>model {e(report['model'])}, suite {e(report['suite'])}, "
            f"{report['total_steps']} steps, {report['layer_groups']} layer groups ({e(report['layer_map'])})<br>"
            f"{report['retrained_episodes']} variant episodes retrained, {report['model_scorings']} ablation scorings, "
            f"{report['seconds']:.0f} s</p>")]
    nav = " | ".join(f"<a href='#{_anchor(s)}'>{e(s)}</a>" for s in all_tables(report))
    body.append(f"<p>{nav}</p>")
    for section, tables in all_tables(report).items():
        body.append(f"<h2 id='{_anchor(section)}'>{e(section)}</h2>")
        if section in pngs:
            data = base64.b64encode(Path(pngs[section]).read_bytes()).decode()
            body.append(f"<img alt='{e(section)}' src='data:image/png;base64,{data}'>")
        for title, headers, rows in tables:
            head = "".join(f"<th>{e(h)}</th>" for h in headers)
            trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><caption>{e(title)}</caption><tr>{head}</tr>{trs}</table>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>metactl inspect</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _anchor(s: str) -> str:
    return s.lower().replace(" ", "-")
