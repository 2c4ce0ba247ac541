"""The live pilot view (mpiq_magic/widgets/pilot.py) on real pilots and real tasks: its rows are the
metrics rows, it follows the manager's task events (no polling), its timeline has one bar per wait
and per execution in the right pilot/device lane, and it falls back to a static figure and text."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

from mpiq_magic.widgets import PilotView, pilot_timeline_figure
from mpiq_magic.widgets.fallback import PLOTLY_MIME
from pilot_fixtures import NARROW_QUBITS, two_pilots  # noqa: F401
from test_pilot import fail, ghz, slow, whoami

pytestmark = pytest.mark.timeout(300)


def by_id(rows):
    return sorted(rows, key=lambda r: r["task_id"])


def trace(fig, meta):
    return next(t for t in fig.data if t.meta == meta)


def test_view_follows_the_tasks_and_equals_the_metrics(two_pilots):
    pm = two_pilots
    view = PilotView(pm, mode="widget", limit=200)
    panel = view.widget
    fig = view._fig
    threads = []  # where the view renders: never on a pilot's threads (agent, link receiver)
    sync = view._sync_panel
    view._sync_panel = lambda: (threads.append(threading.current_thread().name), sync())[1]
    assert panel is not None and view.rows() == by_id(pm.metrics())
    th = ParameterVector("t", 3)
    pc = QuantumCircuit(3)
    for i in range(3):
        pc.ry(th[i], i)
    pc.measure_all()
    futures = [pm.submit_task(whoami) for _ in range(4)]
    futures += [pm.submit_task((pc, np.full(3, np.pi)), shots=20) for _ in range(6)]
    futures += [pm.submit_task(ghz(NARROW_QUBITS + 2), shots=20) for _ in range(4)]
    futures.append(pm.submit_task(fail, "view error 42", pilot="narrow"))
    # a queued task cancelled: engine 0 of "narrow" holds two slow ones (its window), the third waits
    blockers = [pm.submit_task(slow, 1.0, pilot="narrow", resources={"engine": 0}) for _ in range(2)]
    queued = pm.submit_task(slow, 1.0, pilot="narrow", resources={"engine": 0})
    assert queued.cancel()
    mine = futures + blockers + [queued]
    done, not_done = pm.wait(mine, timeout=120)
    assert not not_done
    calls_before_flush = view.throttle.calls
    view.flush()
    assert calls_before_flush >= 1  # refreshed by the events themselves, not only by flush()
    assert view.throttle.calls < view.events / 3  # coalesced: far fewer refreshes than events
    assert threads and not [t for t in threads if t.startswith("pilot-")], threads
    assert view.events >= 3 * (len(mine) - 1) + 2  # submitted, running, finished (the cancelled: 2)
    rows = view.rows()
    assert rows == by_id(pm.metrics())
    assert {r["status"] for r in rows if r["task_id"] in {f.task_id for f in mine}} == {"done", "failed", "cancelled"}
    # the timeline: same FigureWidget, updated in place; one execution bar per finished task
    assert view._fig is fig
    finished = [r for r in rows if r["status"] in ("done", "failed") and r["start"] is not None]
    assert len(trace(fig, "mpiq-pilot-done").y) == sum(r["status"] == "done" for r in finished)
    assert len(trace(fig, "mpiq-pilot-failed").y) == sum(r["status"] == "failed" for r in finished)
    assert len(trace(fig, "mpiq-pilot-cancelled").y) == sum(r["status"] == "cancelled" for r in rows)
    assert len(trace(fig, "mpiq-pilot-running").y) == 0
    lanes = dict(zip([t for t in trace(fig, "mpiq-pilot-done").hovertext], trace(fig, "mpiq-pilot-done").y))
    wide_devices = {d.name for d in pm.pilot("wide").devices}
    for f in futures:
        if f.record.kind == "sampler" and f.result().data.meas.num_bits == NARROW_QUBITS + 2:
            lane = next(y for text, y in lanes.items() if text.startswith(f.task_id + " "))
            assert lane.split(" · ")[0] == "wide" and lane.split(" · ")[1] in wide_devices
        if f.record.kind == "function" and f.record.status == "done":
            lane = next(y for text, y in lanes.items() if text.startswith(f.task_id + " "))
            assert lane == f"{f.record.pilot} · engine {f.record.engine}"
    # the table: every task of this test, the failure's message
    table = view._table.value
    assert all(f.task_id in table for f in mine)
    assert "view error 42" in table and 'class="mpiq-pilot-cancelled"' in table
    # closed: later tasks do not reach the view
    view.close()
    events = view.events
    pm.submit_task(whoami).result(timeout=60)
    assert view.events == events
    view.release()


def test_static_and_text_fallbacks(two_pilots):
    pm = two_pilots
    f = pm.submit_task(ghz(3), shots=16)
    f.result(timeout=60)
    static = PilotView(pm, mode="static")
    bundle = static._repr_mimebundle_()
    spec = bundle[PLOTLY_MIME]
    assert spec["layout"]["meta"] == {"mpiq": "pilot-timeline"}
    done = next(t for t in spec["data"] if t["meta"] == "mpiq-pilot-done")
    assert len(done["y"]) == sum(r["status"] == "done" and r["start"] is not None for r in pm.metrics())
    assert f.task_id in bundle["text/plain"] and f.task_id in bundle["text/html"]
    text = PilotView(pm, mode="text")
    assert f.task_id in repr(text) and "status" in repr(text)
    with pytest.raises(ValueError, match="has no ipywidgets"):
        text.widget
    for v in (static, text):
        v.release()
    # the figure is a pure function of the rows; a running task's bar ends at `now`
    row = dict(f.record.row(), status="running", end=None)
    fig = pilot_timeline_figure([row], now=row["start"] + 2.0)
    running = trace(fig, "mpiq-pilot-running")
    assert list(running.x) == [pytest.approx(2.0, abs=1e-3)]
    assert time.time() > row["start"]
