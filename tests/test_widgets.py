"""Widgets without a browser: mode detection, fallbacks, throttling, in-place updates, figures.

The browser test (test_widgets_browser.py) covers rendering; here everything runs in-process,
except one real headless kernel (nbclient) that checks the static fallback of executed notebooks.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import pytest

from mpiq_magic.widgets import (
    BarrierWidget,
    Dashboard,
    GHZWidget,
    ProgressWidget,
    Throttle,
    TopologyWidget,
    barrier_figure,
    ghz_figure,
    topology_figure,
)
from mpiq_magic.widgets import fallback
from mpiq_magic.widgets.fallback import PLOTLY_MIME, detect_mode, resolve_mode

TOPO = {
    "classical": [{"rank": i, "comm_rank": i, "host": "node-a", "core": i} for i in range(2)],
    "quantum": [
        {"qrank": j, "comm_rank": 2 + j, "host": "127.0.0.1", "device_id": j, "num_qubits": 30,
         "backend": "aer", "method": "automatic"}
        for j in range(3)
    ],
    "hosts": ["node-a"],
}


def barrier_record(flag: str, seq: int, members: list[str], start: float, spread: float = 1e-4) -> dict:
    arrivals = [start + k * spread for k in range(len(members))]
    release = arrivals[-1] + 2e-5
    releases = [release + k * 1e-6 for k in range(len(members))]
    return {"flag": flag, "seq": seq, "members": members, "arrivals": arrivals, "releases": releases,
            "trigger": None, "local_arrival": arrivals[0], "local_release": releases[0]}


def ghz_result(n: int = 12, blocks: int = 3, shots: int = 100) -> dict:
    """A ``GHZResult.to_dict()``-shaped result with a few non-GHZ outcomes (noise)."""
    counts = {"0" * n: 45, "1" * n: 40, "0" * (n - 1) + "1": 6, "1" + "0" * (n - 1): 5, "01" * (n // 2): 4}
    widths = [n // blocks] * blocks
    return {
        "qubits": n, "blocks": blocks, "block_widths": widths, "shots": shots, "monitors_used": blocks,
        "method": "stabilizer", "assignment": [[b] for b in range(blocks)],
        "p_all_zero": 0.45, "p_all_one": 0.40, "ghz_population": 0.85, "distinct_outcomes": 5,
        "counts": counts, "counts_truncated": False,
        "block_stats": [
            {"index": b, "start": b * widths[0], "width": widths[0], "qrank": b, "device": f"127.0.0.1:{b}",
             "method": "stabilizer", "p_raw_zero": 0.5, "p_raw_one": 0.5 if b == 0 else 0.0, "p_uniform": 1.0,
             "flip_rate": 0.0 if b == 0 else 0.45, "seconds": 0.01}
            for b in range(blocks)
        ],
        "timings": {"cut": 0.001, "compile": 0.1, "scatter": 0.002, "barrier": 0.003, "execute": 0.2,
                    "gather": 0.01, "reconstruct": 0.001, "total": 0.317},
    }


# ----------------------------------------------------------------------------- mode detection
class FakeShell:
    kernel = object()


@pytest.fixture
def fake_kernel(monkeypatch):
    """Make ``get_ipython()`` return a kernel-like shell."""
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeShell())
    for var in ("MPIQ_WIDGETS", "JPY_SESSION_NAME", "VSCODE_PID"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_plain_python_resolves_to_text(monkeypatch):
    monkeypatch.delenv("MPIQ_WIDGETS", raising=False)
    assert detect_mode() == "text"
    assert TopologyWidget(TOPO).mode == "text"


def test_terminal_ipython_resolves_to_text(monkeypatch):
    import IPython

    monkeypatch.delenv("MPIQ_WIDGETS", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace())  # no .kernel
    assert detect_mode() == "text"


def test_jupyter_server_kernel_resolves_to_widget(fake_kernel):
    fake_kernel.setenv("JPY_SESSION_NAME", "/home/u/nb.ipynb")
    fake_kernel.setattr(fallback, "_parent_cmdline", lambda: "python -m pytest")
    assert detect_mode() == "widget"


@pytest.mark.parametrize("parent", [
    "/usr/bin/python3 /usr/bin/jupyter-nbconvert --execute nb.ipynb",
    "python -m papermill in.ipynb out.ipynb",
    "python -m pytest --nbval",
    "python run_with_nbclient.py",
])
def test_headless_executor_resolves_to_static(fake_kernel, parent):
    fake_kernel.setattr(fallback, "_parent_cmdline", lambda: parent)
    assert detect_mode() == "static"


def test_unknown_kernel_defaults_to_widget(fake_kernel):
    fake_kernel.setattr(fallback, "_parent_cmdline", lambda: "/opt/some/frontend")
    assert detect_mode() == "widget"


def test_missing_widget_libraries_resolve_to_static(fake_kernel):
    fake_kernel.setattr(fallback, "_widget_libraries", lambda: False)
    fake_kernel.setenv("JPY_SESSION_NAME", "nb.ipynb")
    assert detect_mode() == "static"
    with pytest.raises(ValueError, match="needs ipywidgets and anywidget"):
        resolve_mode("widget")


def test_environment_variable_overrides_detection(fake_kernel):
    fake_kernel.setenv("MPIQ_WIDGETS", "static")
    fake_kernel.setenv("JPY_SESSION_NAME", "nb.ipynb")
    assert detect_mode() == "static"
    fake_kernel.setenv("MPIQ_WIDGETS", "bogus")
    with pytest.raises(ValueError, match="MPIQ_WIDGETS='bogus' is not a widget mode"):
        detect_mode()


def test_explicit_mode_wins_and_is_validated():
    assert TopologyWidget(TOPO, mode="static").mode == "static"
    assert TopologyWidget(TOPO, mode="widget").mode == "widget"
    with pytest.raises(ValueError, match="mode='fancy' is not a widget mode"):
        TopologyWidget(TOPO, mode="fancy")


# ----------------------------------------------------------------------------- throttling
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_coalesces_a_burst_into_one_leading_call_and_flush():
    clock, calls = FakeClock(), []
    th = Throttle(lambda: calls.append(clock.now), max_rate=10, trailing=False, clock=clock)
    for _ in range(100):
        th.poke()
    assert calls == [0.0] and th.pending and th.requests == 100
    clock.now = 0.05
    th.poke()
    assert len(calls) == 1  # still inside the 100 ms interval
    clock.now = 0.1
    th.poke()
    assert calls == [0.0, 0.1] and not th.pending
    th.poke()
    th.flush()
    assert len(calls) == 3 and not th.pending
    th.flush()
    assert len(calls) == 3  # nothing pending: flush does nothing


def test_throttle_rate_over_a_second_of_pokes():
    clock, calls = FakeClock(), []
    th = Throttle(lambda: calls.append(1), max_rate=10, trailing=False, clock=clock)
    for step in range(1000):
        clock.now = step / 1000
        th.poke()
    assert 9 <= len(calls) <= 11


def test_throttle_trailing_timer_shows_the_last_change():
    calls = []
    th = Throttle(lambda: calls.append(time.monotonic()), max_rate=20)
    for _ in range(50):
        th.poke()
    assert len(calls) == 1 and th.pending
    deadline = time.monotonic() + 5
    while th.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2 and not th.pending
    assert calls[1] - calls[0] >= 0.045  # not before the interval passed


def test_poke_never_waits_for_a_slow_refresh_elsewhere():
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow() -> None:
        calls.append(1)
        started.set()
        release.wait(5)

    th = Throttle(slow, max_rate=1000)
    worker = threading.Thread(target=th.poke)
    worker.start()
    assert started.wait(5)
    t0 = time.monotonic()
    for _ in range(100):
        th.poke()
    assert time.monotonic() - t0 < 0.5  # returned while the refresh was still running
    release.set()
    worker.join(5)
    deadline = time.monotonic() + 5
    while th.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not th.pending and len(calls) == 2  # the pokes during the slow refresh were shown once


def test_throttle_failures_are_reported_once_and_never_raised():
    def boom() -> None:
        raise RuntimeError("frontend gone")

    th = Throttle(boom, max_rate=1e6, trailing=False)
    with pytest.warns(RuntimeWarning, match="frontend gone"):
        th.poke()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        th.poke()
        th.flush()
    assert isinstance(th.last_error, RuntimeError)


def test_throttle_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="positive number of refreshes per second"):
        Throttle(lambda: None, max_rate=0)


# ----------------------------------------------------------------------------- widget mode, in place
def test_widget_mode_updates_figures_in_place_and_throttled():
    view = BarrierWidget(mode="widget", keep=5)
    panel = view.widget
    fig = view._fig
    traces = list(fig.data)
    members = ["rank 0", "qrank 0", "qrank 1"]
    for seq in range(1, 301):
        view.add(barrier_record("QQ" if seq % 2 else "ALL", seq, members, start=seq * 1e-3))
    view.flush()
    assert view.widget is panel and view._fig is fig and list(fig.data) == traces  # nothing re-created
    assert view.throttle.requests == 300 and view.throttle.calls < 30
    assert view.count == 300 and len(view.records) == 5
    assert set(fig.layout.yaxis.categoryarray) == set(members)
    qq = fig.data[1]
    assert sum(1 for y in qq.y if y is not None) > 0
    assert view.throttle.last_error is None


def _partition_view():
    from mpiq_magic.distribute import partition_circuit
    from mpiq_magic.distribute.examples import ghz
    from mpiq_magic.widgets import PartitionWidget

    return PartitionWidget(partition_circuit(ghz(6), [3, 3], method="static"), mode="widget")


def _qaoa_view():
    import networkx as nx

    from mpiq_magic.widgets import QAOAWidget

    return QAOAWidget(nx.cycle_graph(6), mode="widget")


@pytest.mark.parametrize("make", [
    lambda: TopologyWidget(TOPO, mode="widget"), lambda: BarrierWidget(mode="widget"), lambda: GHZWidget(12, 3, mode="widget"),
    _partition_view, _qaoa_view,
], ids=["topology", "barrier", "ghz", "partition", "qaoa"])
def test_live_figures_open_their_comm_with_the_figure(make, monkeypatch):
    """The frontend model is created from the comm-open message alone (JupyterLab drew a blank plot
    from a plain FigureWidget's empty first message): it must carry the traces and layout, and a
    small module that loads plotly's widget bundle (sent alongside) in the background."""
    import comm
    import plotly.graph_objects as go

    opened: list[dict] = []
    create = comm.create_comm

    def spy(**kwargs):
        opened.append(kwargs["data"]["state"])
        return create(**kwargs)

    monkeypatch.setattr(comm, "create_comm", spy)
    view = make()
    view.widget
    fig = view._fig
    state = next(s for s in opened if s.get("_model_name") == "AnyModel")
    assert [t["meta"] for t in state["_widget_data"]] == [t.meta for t in fig.data] and len(fig.data) >= 2
    assert state["_widget_layout"]["meta"]["mpiq"] == view.name
    assert state["_widget_layout"]["title"]["text"] == fig.layout.title.text != ""
    assert len(state["_esm"]) < 8000 and "_plotly_esm" in state["_esm"]
    assert state["_plotly_esm"] == str(go.FigureWidget._esm) and len(state["_plotly_esm"]) > 1_000_000
    view.release()


def test_topology_status_updates_live():
    view = TopologyWidget(TOPO, mode="widget")
    view.widget
    fig = view._fig
    view.update_status("qrank 1", "busy")
    view.update_status(4, "dead", detail="killed by test")  # comm rank 4 is qrank 2
    view.update_status({"rank 1": "busy"})
    view.flush()
    quantum = next(t for t in fig.data if t.meta == "mpiq-quantum")
    classical = next(t for t in fig.data if t.meta == "mpiq-classical")
    assert list(quantum.marker.color) == ["#2ca02c", "#ff7f0e", "#7f7f7f"]
    assert list(quantum.marker.symbol)[2] == "circle-x"
    assert list(classical.marker.color)[1] == "#ff7f0e"
    assert "killed by test" in quantum.hovertext[2]
    assert view.status == {"rank 0": "idle", "rank 1": "busy", "qrank 0": "idle", "qrank 1": "busy", "qrank 2": "dead"}
    assert "1 dead" in view._header.value
    with pytest.raises(ValueError, match="Status 'sleepy'"):
        view.update_status("rank 0", "sleepy")
    with pytest.raises(KeyError, match="names no node"):
        view.update_status("qrank 9", "busy")


def test_topology_groups_loopback_devices_under_the_single_host():
    fig = topology_figure(TOPO)
    hosts = [a.text for a in fig.layout.annotations]
    assert hosts == ["host <b>node-a</b>"]
    two_hosts = {**TOPO, "quantum": [{**q, "host": "qpu-node"} for q in TOPO["quantum"]], "hosts": ["node-a", "qpu-node"]}
    assert len(topology_figure(two_hosts).layout.shapes) == 2


def test_ghz_blocks_fill_in_then_result():
    view = GHZWidget(12, 3, mode="widget", top=2)
    view.widget
    blocks = view._fig.data[0]
    assert list(blocks.marker.color) == ["#d9d9d9"] * 3
    view.stage("scatter")
    view.block_done(1, qrank=1, seconds=0.01)
    view.flush()
    assert list(view._fig.data[0].marker.color) == ["#9ecae1", "#2ca02c", "#9ecae1"]
    assert view.blocks_done == 1
    view.set_result(ghz_result())
    view.flush()
    dist = next(t for t in view._fig.data if t.meta == "mpiq-ghz-distribution")
    assert abs(sum(dist.y) - 1.0) < 1e-12
    assert list(dist.x[:2]) == ["0…0 (12)", "1…1 (12)"] and len(dist.x) == 5 and dist.x[-1] == "other"
    assert dist.y[-1] == pytest.approx(0.04)  # the outcome beyond the top 2 others
    assert view._fig.data[0] is blocks and view.blocks_done == 3
    with pytest.raises(IndexError, match="Block 7 is not part of the planned cut"):
        view.block_done(7)


def test_progress_counts_per_monitor():
    view = ProgressWidget(6, label="GHZ(12)", mode="widget")
    view.widget
    for k, (q, done) in enumerate([(0, 1), (1, 1), (0, 2), (2, 1), (1, 2), (2, 2)]):
        view.advance(q, done=done, total=2)
    view.flush()
    assert view.done == 6 and view.monitors == {0: (2, 2), 1: (2, 2), 2: (2, 2)}
    assert view._bar.value == view._bar.max == 6 and view._bar.bar_style == "success"
    assert "6/6 blocks done" in view._header.value
    assert len(view._box.children) == 3


# ----------------------------------------------------------------------------- fallbacks
def test_text_mode_prints_summary_on_show_and_finish(capsys):
    view = GHZWidget(12, 3, mode="text")
    view.show()
    view.set_result(ghz_result())
    view.finish()
    out = capsys.readouterr().out
    assert "GHZ(12): 3/3 blocks done" in out and "P(0…0) = 0.4500" in out
    assert "timings (ms)" in out


def test_static_bundle_has_figure_html_and_text():
    view = BarrierWidget([barrier_record("CC", 1, ["rank 0", "rank 1"], 10.0)], mode="static")
    bundle = view._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", PLOTLY_MIME}
    assert bundle["text/plain"].startswith("barriers: 1 recorded (CC 1)")
    assert bundle[PLOTLY_MIME]["layout"]["meta"]["mpiq"] == "barrier"
    json.dumps(bundle)  # JSON-ready
    text = TopologyWidget(TOPO, mode="text")._repr_mimebundle_()
    assert set(text) == {"text/plain"} and "3 quantum" in text["text/plain"]


def test_widget_mode_bundle_carries_a_text_summary():
    bundle = TopologyWidget(TOPO, mode="widget")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("hybrid communicator: 2 classical, 3 quantum")


def test_widget_property_refuses_other_modes():
    with pytest.raises(ValueError, match="in 'text' mode, which has no ipywidgets"):
        TopologyWidget(TOPO, mode="text").widget


# ----------------------------------------------------------------------------- pure figures and events
def test_pure_figures_from_data():
    recs = [barrier_record(f, s, m, 1.0 + s * 0.01) for s, (f, m) in enumerate(
        [("CC", ["rank 0", "rank 1"]), ("QQ", ["qrank 0", "qrank 1"]),
         ("ALL", ["rank 0", "rank 1", "qrank 0 (device 127.0.0.1:0)", "qrank 1 (device 127.0.0.1:1)"])])]
    recs.append({"flag": "QQ", "seq": 9, "members": [], "arrivals": [], "releases": None, "trigger": None,
                 "local_arrival": None, "local_release": None})  # a non-member's empty record: skipped
    fig = barrier_figure(recs)
    assert fig.layout.meta["processes"] == ["rank 0", "rank 1", "qrank 0", "qrank 1"]
    assert "3 recorded" in fig.layout.title.text
    g = ghz_figure(ghz_result())
    dist = next(t for t in g.data if t.meta == "mpiq-ghz-distribution")
    assert abs(sum(dist.y) - 1.0) < 1e-12
    timings = next(t for t in g.data if t.meta == "mpiq-ghz-timings")
    assert list(timings.y) == ["cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct"]
    with pytest.raises(TypeError, match="A GHZ result must be"):
        ghz_figure({"counts": {}})
    with pytest.raises(TypeError, match="A topology must be"):
        topology_figure([1, 2])


def test_ghz_figure_from_a_real_reconstruction():
    np = pytest.importorskip("numpy")
    from mpiq_magic.ghz.reconstruct import pack_bits, reconstruct

    rng = np.random.default_rng(1)
    shots, widths = 400, [4, 4, 4]
    first = rng.integers(0, 2, shots, dtype=np.uint8)
    blocks = [np.repeat(first[:, None], 4, axis=1)] + [np.zeros((shots, 4), np.uint8) for _ in widths[1:]]
    blocks[2][rng.random(shots) < 0.1, 0] ^= 1  # noise: a few non-GHZ outcomes
    rec = reconstruct([pack_bits(b) for b in blocks], widths)
    fig = ghz_figure(rec)
    dist = next(t for t in fig.data if t.meta == "mpiq-ghz-distribution")
    assert abs(sum(dist.y) - 1.0) < 1e-12
    assert dist.y[0] == pytest.approx(rec.p_all_zero) and dist.y[1] == pytest.approx(rec.p_all_one)


def test_dashboard_routes_pipeline_events():
    views = [TopologyWidget(mode="text"), BarrierWidget(mode="text"), GHZWidget(mode="text"), ProgressWidget(mode="text")]
    dash = Dashboard(*views)
    dash({"event": "topology", "topology": TOPO})
    dash.callback("cut", {"qubits": 12, "blocks": 3, "widths": [4]})
    dash.callback("scatter", {"monitors": 3, "bytes": 100})
    assert views[0].status["qrank 0"] == "busy"
    for q in range(3):
        dash.callback("executed", {"qrank": q, "block": q, "done": 1, "total": 1, "seconds": 0.01})
    dash({"event": "barrier", "record": barrier_record("QQ", 1, ["qrank 0", "qrank 1", "qrank 2"], 5.0)})
    dash({"event": "result", "result": ghz_result()})
    dash({"event": "status", "who": "qrank 2", "status": "dead", "detail": "exit 9"})
    dash({"event": "executed", "qrank": 0, "block": 99, "done": 1, "total": 1})  # out of plan: ignored
    dash({"event": "something-new"})
    assert not dash.errors
    assert views[0].status == {"rank 0": "idle", "rank 1": "idle", "qrank 0": "idle", "qrank 1": "idle", "qrank 2": "dead"}
    assert views[1].count == 1 and views[2].blocks_done == 3 and views[3].done == 3
    dash({"event": "status", "who": "qrank 7", "status": "busy"})
    assert dash.errors and dash.errors[0].startswith("[topology:status] KeyError")


# ----------------------------------------------------------------------------- a real headless kernel
NB_CODE = """\
import json
from mpiq_magic.widgets import GHZWidget
view = GHZWidget(12, 3)
print("mode", view.mode)
view.show()
for b in range(3):
    view.block_done(b, qrank=b)
view.set_result(json.loads(%r))
view.finish()
""" % json.dumps(ghz_result())


@pytest.mark.timeout(120)
def test_executed_notebook_keeps_the_static_fallback(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("MPIQ_WIDGETS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NB_CODE)]
    client = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with monkeypatch.context() as m:
        m.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
        client.execute()
    outputs = nb.cells[0].outputs
    assert outputs[0]["text"].strip() == "mode static"  # nbclient's kernel: no widget frontend
    display = next(o for o in outputs if o["output_type"] == "display_data")
    data = display["data"]
    # The display was replaced as the run progressed: the notebook keeps the final state.
    assert "GHZ(12): 3/3 blocks done · reconstructed" in data["text/plain"]
    dist = next(t for t in data[PLOTLY_MIME]["data"] if t.get("meta") == "mpiq-ghz-distribution")
    assert abs(sum(dist["y"]) - 1.0) < 1e-12
    assert "mpiq-summary" in data["text/html"]


# ----------------------------------------------------------------------------- engines -> client
def test_engine_events_reach_the_views_through_ipyparallel():
    """publish_event on a real ipyparallel engine; Dashboard.follow routes what the client receives."""
    ipp = pytest.importorskip("ipyparallel")

    code = """
import time
from mpiq_magic.events import publish_event
publish_event("cut", {"qubits": 12, "blocks": 6})
for b in range(6):
    publish_event("executed", {"qrank": b % 2, "block": b, "done": b // 2 + 1, "total": 3})
    time.sleep(0.01)
"""

    progress, ghz = ProgressWidget(mode="text"), GHZWidget(mode="text")
    with ipp.Cluster(n=1, log_level=40) as rc:
        ar = rc[:].execute(code, block=False)
        Dashboard(progress, ghz).follow(ar, timeout=60)
        ar.get(timeout=10)
    assert progress.done == 6 and progress.monitors == {0: (3, 3), 1: (3, 3)}
    assert ghz.num_blocks == 6 and ghz.blocks_done == 6


def test_publish_event_outside_an_engine_does_nothing():
    from mpiq_magic.events import publish_event

    publish_event("cut", {"qubits": 4})  # no engine, no IPython shell: silently nothing
    assert "ipykernel.zmqshell" not in sys.modules or not sys.modules["ipykernel.zmqshell"].ZMQInteractiveShell.initialized()
