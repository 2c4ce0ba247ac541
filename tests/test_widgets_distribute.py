"""The partition and distribute views without a browser: their data equal the partitioner's and the
feed-forward plan's, e-bit bars add up, progress per monitor follows the run's events, figures update
in place. Partitions come from the real partitioner (no canned results); nothing here starts MPI."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit

from mpiq_magic.distribute import partition_circuit
from mpiq_magic.distribute.examples import cnot_ladder, ghz
from mpiq_magic.distribute.magic import Width, parse_widths, plan_on_client, static_partition
from mpiq_magic.widgets import Dashboard, DistributeWidget, PartitionWidget, partition_figure, partition_view
from mpiq_magic.widgets.distribute import partition_dict

pytestmark = pytest.mark.timeout(120)


def qft_like(n: int) -> QuantumCircuit:
    """All-to-all controlled phases (a QFT without swaps): the multilevel partitioner moves qubits."""
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.h(i)
        for j in range(i + 1, n):
            qc.cp(3.14159 / 2 ** (j - i), j, i)
    qc.measure_all()
    return qc


@pytest.fixture(scope="module")
def moving():
    """A partition with teleportations (qubits change qrank over time): the time-sliced baseline."""
    result = partition_circuit(qft_like(12), [4, 4, 4], method="time-sliced")
    assert result.teleport_ebits > 0, result.summary()
    return result


def heat(fig):
    return next(t for t in fig.data if t.meta == "mpiq-partition-cells")


def bars(fig):
    return next(t for t in fig.data if t.meta == "mpiq-partition-ebits")


# ----------------------------------------------------------------------------- partition view data
@pytest.mark.parametrize("method", ["multilevel", "static", "time-sliced"])
def test_heat_map_cells_are_the_assignment_per_layer(method, moving):
    result = moving if method == "time-sliced" else partition_circuit(qft_like(12), [4, 4, 4], method=method,
                                                                      restarts=1)
    view = partition_view(result)
    fig = partition_figure(result)
    z = [list(row) for row in heat(fig).z]
    assert (view.num_qubits, view.num_layers) == (12, result.num_layers)
    for t, row in enumerate(result.assignment):
        for q, p in enumerate(row):
            assert view.cells[q][t] == (None if p < 0 else p)
            assert z[q][t] == (None if p < 0 else p)
    # every live cell is coloured by a qrank, and per layer no qrank holds more than its capacity
    for t in range(result.num_layers):
        col = [view.cells[q][t] for q in range(12) if view.cells[q][t] is not None]
        assert all(col.count(p) <= cap for p, cap in enumerate(result.capacities))
    # the colour scale maps qrank p to colour p: one colour per qrank, in order
    assert (heat(fig).zmin, heat(fig).zmax) == (-0.5, 2.5) and list(heat(fig).colorbar.tickvals) == [0, 1, 2]


def test_ebit_bars_sum_to_the_total(moving):
    fig = partition_figure(moving)
    ys = list(bars(fig).y)
    assert ys == list(moving.ebits_per_layer) and len(ys) == moving.num_layers
    assert sum(ys) == moving.ebits == moving.teleport_ebits + moving.gate_ebits
    assert f"{moving.ebits} e-bits ({moving.teleport_ebits} teleportation" in fig.layout.title.text
    assert f"(total {moving.ebits})" in " ".join(a.text for a in fig.layout.annotations)
    bad = {**partition_dict(moving), "ebits": moving.ebits + 1}
    with pytest.raises(ValueError, match=f"sum to {moving.ebits}, not the partition's total {moving.ebits + 1}"):
        partition_view(bad)


def test_distribute_partition_is_the_feed_forward_plan():
    planned = plan_on_client([Width(30)] * 3, cnot_ladder(9))
    plan, part = planned.plan, planned.partition
    owner = {q: p for p, b in plan.blocks.items() for q in b.qubits}
    view = partition_view(planned.event)
    # static: each qubit stays on its block's monitor at every layer it is live
    for q in range(9):
        assert {p for p in view.cells[q] if p is not None} == {owner[q]}
    # feed-forward cuts per layer are the plan's cuts, by layer; the partition's e-bits count them too
    layers = [c.layer for c in plan.cuts if c.mode != "local"]
    assert [t for t, c in enumerate(view.cuts_per_layer) for _ in range(c)] == sorted(layers)
    assert view.cut_modes == (("variant", 2),) and view.ebits == part.ebits == sum(view.ebits_per_layer) == 2
    assert planned.event["blocks"] == [{"qrank": p, "qubits": 3, "variants": v} for p, v in enumerate([1, 2, 2])]
    # the client's static partition is exactly what the planner does with it again
    from mpiq_magic.distribute.feedforward import plan_feedforward

    again = plan_feedforward(cnot_ladder(9), part)
    assert {p: b.qubits for p, b in again.blocks.items()} == {p: b.qubits for p, b in plan.blocks.items()}
    assert static_partition(plan, [30, 30, 30], "x").assignment == part.assignment


def test_parse_widths():
    assert parse_widths("8,8,10") == [8, 8, 10] and parse_widths("4x8") == [8] * 4
    import argparse

    for bad in ("", "8,0", "a,b", "2x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected monitor widths"):
            parse_widths(bad)


# ----------------------------------------------------------------------------- live views
def test_partition_widget_draws_each_partition_in_a_figure_made_for_it(moving):
    """No figure until there is something to draw; a new partition gets a new FigureWidget holding
    it from the start (plotly's in-place edits are lost by a page still loading its widget code)."""
    view = PartitionWidget(mode="widget", max_rate=1000)
    box = view.widget
    assert view._fig is None and list(box.children) == [view._header]
    view.set_partition(moving)
    view.flush()
    first = view._fig
    assert list(box.children) == [view._header, first]
    assert [list(r) for r in heat(first).z] == [list(r) for r in partition_view(moving).cells]
    assert list(bars(first).y) == list(moving.ebits_per_layer) and f"{moving.ebits} e-bits" in view._header.value
    other = partition_circuit(qft_like(12), [4, 4, 4], method="static")
    assert other.ebits_per_layer != moving.ebits_per_layer
    view.set_partition(other)
    view.flush()
    assert view._fig is not first and list(box.children) == [view._header, view._fig]
    assert list(bars(view._fig).y) == list(other.ebits_per_layer)
    assert first.comm is None  # the replaced figure's widget is closed
    view.release()


def test_distribute_widget_follows_the_run_events():
    planned = plan_on_client([Width(30)] * 3, cnot_ladder(9))
    view = DistributeWidget(mode="widget", max_rate=1000)
    view.widget
    dash = Dashboard(view)
    dash(planned.event)
    assert view.monitors == {0: (0, 1), 1: (0, 2), 2: (0, 2)}  # variants assigned per monitor
    view.flush()
    fig = view._fig
    assert list(next(t for t in fig.data if t.meta == "mpiq-distribute-done").x) == [0, 0, 0]
    dash.callback("plan", {"summary": "...", "partition": "contiguous"})
    dash.callback("compile", {"circuits": 5, "compiled": 5})
    for q, done, total in [(1, 1, 2), (0, 1, 1), (2, 1, 2), (2, 2, 2), (1, 2, 2)]:
        dash.callback("executed", {"qrank": q, "block": q, "variant": done - 1, "done": done, "total": total,
                                   "seconds": 0.01})
    view.flush()
    assert view.monitors == {0: (1, 1), 1: (2, 2), 2: (2, 2)}
    assert view._fig is fig  # progress edits the figure in place
    done = next(t for t in view._fig.data if t.meta == "mpiq-distribute-done")
    total = next(t for t in view._fig.data if t.meta == "mpiq-distribute-total")
    assert list(done.x) == [1, 2, 2] and list(total.x) == [1, 2, 2] and list(done.text) == ["1/1", "2/2", "2/2"]
    assert "5/5 circuits done on 3 monitor(s)" in view._header.value
    result = {"shots": 100, "executions": 5, "timings": {"total": 0.5},
              "blocks": [{"qrank": p, "qubits": [3 * p, 3 * p + 1, 3 * p + 2], "variants": v, "seconds": 0.02}
                         for p, v in enumerate([1, 2, 2])]}
    dash({"event": "result", "result": result})
    dash.callback("executed", {"qrank": 0, "done": 9, "total": 9})  # late event of a finished run: ignored
    dash({"event": "something-new"})
    assert not dash.errors and view.monitors == {0: (1, 1), 1: (2, 2), 2: (2, 2)}
    text = view.summary()
    assert "5/5 circuits done" in text and "100 shots, 5 circuit(s) per shot" in text and "0.5 s" in text
    assert "qrank 2: 2/2 circuit(s) done, 3 qubit(s)" in text
    dash.release()


def test_distribute_widget_without_a_partition_counts_results():
    view = DistributeWidget(mode="text")
    view.event({"event": "executed", "qrank": 1, "done": 1, "total": 3})
    assert view.monitors == {1: (1, 3)}
    assert view.summary().startswith("distribute: partition not known here")
    assert "1/3 circuits done on 1 monitor(s)" in view._text_progress()


def test_static_and_text_forms(moving, capsys):
    bundle = PartitionWidget(moving, mode="static")._bundle()
    assert bundle["application/vnd.plotly.v1+json"]["layout"]["meta"] == {"mpiq": "partition"}
    assert bundle["text/plain"].startswith(f"time-sliced: {moving.ebits} e-bits")
    view = PartitionWidget(moving, mode="text").show()
    out = capsys.readouterr().out
    assert "e-bits per layer: " + " ".join(map(str, moving.ebits_per_layer[:48])) in out
    for p in range(3):
        assert f"qrank {p}: " in out and "live of 4" in out
    view.finish()
    assert capsys.readouterr().out == ""  # nothing changed since show()
    small = partition_circuit(ghz(8), [4, 4])
    assert "qrank 0: 4 qubit(s) {0-3}" in PartitionWidget(small, mode="text").summary()


def test_distribute_widget_follows_a_quasi_probability_fallback():
    view = DistributeWidget(mode="text")
    view.event({"event": "fallback", "from": "feed-forward", "to": "qpd", "reason": "..."})
    assert "falling back to quasi-probability cuts" in view.summary()
    view.event({"event": "plan", "mode": "qpd", "overhead": 9.0, "subexperiments": 24})
    assert "overhead 9, 24 subexperiments" in view.summary()
    for done in (1, 2, 3):
        view.event({"event": "executed", "mode": "qpd", "qrank": 0, "done": done, "total": None})
    view.event({"event": "executed", "mode": "qpd", "qrank": 1, "done": 2, "total": None})
    assert view.monitors == {0: (3, 3), 1: (2, 2)}
    view.event({"event": "result", "result": {"mode": "qpd", "expectation_values": [0.1]}})
    assert "5/5 circuits done on 2 monitor(s) · done (quasi-probability cuts)" in view.summary()
