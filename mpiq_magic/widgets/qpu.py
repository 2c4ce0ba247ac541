"""A Gantt view of QPU accounting (:class:`mpiq_magic.qpu_accounting.QPUAccounting`): one row per
(partition, workflow); light bars are SLURM allocations, dark bars on the quantum row are the
quantum blocks that ran in them, so allocated-but-idle QPU time is the light part.

:func:`gantt` is a plotly figure (a notebook shows it as is); :func:`gantt_html` is a static,
self-contained HTML/SVG rendering with no plotly and no JavaScript (results files, terminals).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..qpu_accounting import QPUAccounting

_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def _bars(acc: "QPUAccounting", origin: float) -> list[dict[str, Any]]:
    """Rows and bars: dicts with row, start, end (seconds from ``origin``), kind, workflow, job."""
    workflows = sorted({j.workflow for j in acc.jobs})
    bars = []
    for job in acc.jobs:
        colour = _COLOURS[workflows.index(job.workflow) % len(_COLOURS)]
        for partition, iv in job.partition_intervals.items():
            row = partition if partition == acc.quantum_partition else f"{partition} · {job.workflow}"
            bars.append({"row": row, "start": iv.start - origin, "end": iv.end - origin, "kind": "held",
                         "workflow": job.workflow, "job": job.job_id, "colour": colour})
        for b in job.busy:
            bars.append({"row": acc.quantum_partition, "start": b.start - origin, "end": b.end - origin,
                         "kind": "busy", "workflow": job.workflow, "job": job.job_id, "colour": colour})
    return bars


def _rows(acc: "QPUAccounting", bars: Iterable[dict]) -> list[str]:
    rows = sorted({b["row"] for b in bars if b["row"] != acc.quantum_partition})
    return [acc.quantum_partition, *rows]


def _title(acc: "QPUAccounting") -> str:
    return (f"{acc.scenario}: makespan {acc.makespan:.1f} s, QPU held {acc.qpu_held:.1f} s, "
            f"busy {acc.qpu_busy:.1f} s, idle {acc.qpu_idle:.1f} s")


def gantt(acc: "QPUAccounting", origin: float | None = None) -> "go.Figure":
    """A plotly Gantt figure of ``acc`` (time in seconds from ``origin``, default its start)."""
    import plotly.graph_objects as go

    origin = acc.start if origin is None else origin
    bars = _bars(acc, origin)
    fig = go.Figure()
    for b in bars:
        busy = b["kind"] == "busy"
        fig.add_trace(go.Bar(
            y=[b["row"]], x=[b["end"] - b["start"]], base=[b["start"]], orientation="h",
            marker={"color": b["colour"], "opacity": 1.0 if busy else 0.35},
            width=0.4 if busy else 0.8, showlegend=False,
            hovertemplate=f"{b['workflow']} job {b['job']} {b['kind']}: %{{base:.1f}}–{b['end']:.1f} s<extra></extra>",
        ))
    fig.update_layout(title=_title(acc), barmode="overlay", height=120 + 40 * len(_rows(acc, bars)),
                      xaxis_title="seconds", margin={"l": 90, "r": 20, "t": 50, "b": 40},
                      yaxis={"categoryorder": "array", "categoryarray": list(reversed(_rows(acc, bars)))})
    return fig


def gantt_html(acc: "QPUAccounting", origin: float | None = None, width: int = 900) -> str:
    """The same Gantt view as a self-contained HTML fragment (inline SVG)."""
    origin = acc.start if origin is None else origin
    bars = _bars(acc, origin)
    rows = _rows(acc, bars)
    span = max((b["end"] for b in bars), default=1.0) or 1.0
    left, row_h, top = 90, 28, 10
    scale = (width - left - 10) / span
    height = top + row_h * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    for i, row in enumerate(rows):
        y = top + i * row_h
        parts.append(f'<text x="4" y="{y + row_h / 2 + 4}">{html.escape(row)}</text>')
    for b in bars:
        i = rows.index(b["row"])
        busy = b["kind"] == "busy"
        y = top + i * row_h + (8 if busy else 2)
        h = row_h - (16 if busy else 4)
        x, w = left + b["start"] * scale, max(1.0, (b["end"] - b["start"]) * scale)
        tip = f"{b['workflow']} job {b['job']} {b['kind']}: {b['start']:.1f}-{b['end']:.1f} s"
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{h}" fill="{b["colour"]}" '
                     f'fill-opacity="{1.0 if busy else 0.35}"><title>{html.escape(tip)}</title></rect>')
    axis_y = top + row_h * len(rows) + 14
    for k in range(0, int(span) + 1, max(1, int(span // 10) or 1)):
        parts.append(f'<text x="{left + k * scale:.1f}" y="{axis_y}">{k}s</text>')
    parts.append("</svg>")
    return f"<h3>{html.escape(_title(acc))}</h3>\n" + "".join(parts)
