"""``mpiq-report.html``: plotly figures of one GHZ job (topology, barrier timing, distribution),
drawn by the same pure figure functions as the live widgets (:mod:`mpiq_magic.widgets`).

plotly.js is embedded once in the file, so the report opens offline.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any


def report_figures(out: dict[str, Any], run: dict[str, Any]) -> list:
    """The report's figures, drawn by the widgets' pure figure functions: the hybrid communicator
    (each monitor's hover names how many blocks it ran), the pipeline's QQ barrier with the extra
    QQ rounds, and the GHZ reconstruction (distribution, per-block populations, stage timings)."""
    from ..widgets import barrier_figure, ghz_figure, topology_figure

    blocks_run = {f"qrank {j}": ("idle", f"{len(blocks)} block(s)") for j, blocks in enumerate(run.get("assignment", []))}
    records = [r for r in [run.get("barrier"), *(out.get("barrier_rounds") or [])] if r]
    return [topology_figure(out.get("topology"), blocks_run), barrier_figure(records), ghz_figure(run)]


def write_report(path: str | Path, out: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write the HTML report (plotly.js embedded, works offline) and return its path."""
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, fig in enumerate(report_figures(out, run))
    ]
    t = run["timings"]
    summary = (
        f"GHZ({run['qubits']}) in {run['blocks']} blocks on {run['monitors_used']} monitors, "
        f"{run['shots']} shots, method {run['method']}: P(0...0) = {run['p_all_zero']:.4f}, "
        f"P(1...1) = {run['p_all_one']:.4f}, GHZ population = {run['ghz_population']:.4f}; "
        f"pipeline {t['total']:.3f} s."
    )
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mpiq report</title>
<style>body{{font-family:sans-serif;margin:2em;}} p.note{{color:#555;max-width:60em}}</style></head>
<body><h1>MPI-Q distributed GHZ</h1>
<p>{html.escape(summary)}</p>
<p class="note">Z-basis statistics of the uncut circuit are reconstructed exactly by classical
feed-forward (each block's shot XOR-ed with the corrected last bit of the previous block);
observables needing coherence across blocks would need quasi-probability cutting.
Generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>
{''.join(parts)}
</body></html>
"""
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return path
