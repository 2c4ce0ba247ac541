"""Metrics of tasks: one row per task, written as CSV or JSON (no pandas), shown as text.

Columns (:data:`COLUMNS`): task id, kind, name, pilot, engine, devices, submit, start, end,
wait (start - submit), execution (end - start), device seconds, status, error, batch size and
the placement reasons.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from typing import Any, Iterable, Mapping, Sequence

COLUMNS = (
    "task_id", "kind", "name", "pilot", "engine", "devices", "submit", "start", "end", "wait",
    "execution", "device_seconds", "status", "error", "batch", "placement",
)


def rows_of(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows from ``TaskRecord`` s (or rows already)."""
    return [r.row() if hasattr(r, "row") else dict(r) for r in records]


def to_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str] | None = None) -> str:
    """The rows as CSV text; also written to ``path`` when given."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    text = buf.getvalue()
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text


def to_json(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str] | None = None) -> str:
    """The rows as a JSON list; also written to ``path`` when given."""
    text = json.dumps([{k: row.get(k) for k in COLUMNS} for row in rows], indent=1)
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and pilot; median wait and execution; makespan; throughput."""
    out: dict[str, Any] = {"tasks": len(rows), "status": {}, "pilots": {}}
    for r in rows:
        out["status"][r["status"]] = out["status"].get(r["status"], 0) + 1
        out["pilots"][r["pilot"]] = out["pilots"].get(r["pilot"], 0) + 1
    waits = [r["wait"] for r in rows if r.get("wait") is not None]
    execs = [r["execution"] for r in rows if r.get("execution") is not None]
    out["median_wait"] = statistics.median(waits) if waits else None
    out["median_execution"] = statistics.median(execs) if execs else None
    ends = [r["end"] for r in rows if r.get("end") is not None]
    if ends:
        span = max(ends) - min(r["submit"] for r in rows)
        out["makespan"] = span
        out["throughput"] = len(ends) / span if span > 0 else None
    return out


def text_table(rows: Sequence[Mapping[str, Any]], limit: int = 40) -> str:
    """A fixed-width table of the last ``limit`` rows (the widgets' text fallback)."""
    head = ("task_id", "kind", "pilot", "devices", "wait", "execution", "status", "error")
    shown = list(rows)[-limit:]
    t0 = min((r["submit"] for r in rows), default=0.0)

    def cell(r, k):
        v = r.get(k)
        if k in ("wait", "execution") and v is not None:
            return f"{v * 1e3:.1f} ms"
        if v is None:
            return "-"
        return str(v)[:40]

    table = [head] + [tuple(cell(r, k) for k in head) for r in shown]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table]
    s = summary(rows)
    lines.append(f"{s['tasks']} task(s), status {s['status']}, first submit at t0={t0:.3f}")
    return "\n".join(lines)


def timeline(rows: Sequence[Mapping[str, Any]], width: int = 60) -> str:
    """A text Gantt chart: one line per task, ``.`` waiting, ``#`` running (relative to the first submit)."""
    done = [r for r in rows if r.get("end") is not None]
    if not done:
        return "(no finished tasks)"
    t0 = min(r["submit"] for r in done)
    t1 = max(r["end"] for r in done)
    scale = width / max(t1 - t0, 1e-9)
    lines = []
    for r in done:
        a = int((r["submit"] - t0) * scale)
        b = int(((r["start"] or r["submit"]) - t0) * scale)
        c = max(int((r["end"] - t0) * scale), b + 1)
        bar = " " * a + "." * (b - a) + "#" * (c - b)
        lines.append(f"{r['task_id']} {str(r['pilot'])[:10]:<10} |{bar:<{width + 1}}| {r['status']}")
    lines.append(f"0 .. {t1 - t0:.3f} s")
    return "\n".join(lines)
