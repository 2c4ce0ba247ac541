"""``HybridCluster.distribute`` on live engines (the shared 1 classical + 3 monitor cluster of
``cluster_fixtures.hybrid_cluster``): the sampled distribution equals exact simulation of the
uncut circuit within a total-variation bound, and the run's events drive the distribute view.

Reference: ``Statevector`` probabilities of the uncut circuit. Tolerance:
:func:`mpiq_magic.ghz.reconstruct.tv_bound` (Jensen + McDiarmid; exceeded with probability <= 1e-6).
"""

from __future__ import annotations

import pytest
from qiskit.quantum_info import Statevector

from mpiq_magic.distribute.examples import cnot_ladder, ghz
from mpiq_magic.ghz.reconstruct import total_variation, tv_bound

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

SHOTS = 4000


def exact(circuit) -> dict[str, float]:
    return Statevector(circuit.remove_final_measurements(inplace=False)).probabilities_dict()


def test_ghz_over_three_monitors_matches_exact(hybrid_cluster):
    circuit = ghz(12)
    events: list[dict] = []
    result = hybrid_cluster.distribute(circuit, shots=SHOTS, progress=events.append)
    ideal = exact(circuit)
    tv, bound = total_variation(result.counts, ideal), tv_bound(ideal, SHOTS)
    assert tv <= bound, f"TV {tv:.4f} > bound {bound:.4f}"
    assert set(result.counts) == {"0" * 12, "1" * 12}
    assert [b.qrank for b in result.blocks] == [0, 1, 2] and result.executions == 3
    assert [c["mode"] for c in result.feed_forward_cuts] == ["frame", "frame"]
    final = {e["qrank"]: (e["done"], e["total"]) for e in events if e["event"] == "executed"}
    assert final == {0: (1, 1), 1: (1, 1), 2: (1, 1)}
    stages = ["plan", "compile", "reconstruct", "result"]
    assert [e["event"] for e in events if e["event"] in stages] == stages


def test_ladder_with_non_clifford_remainder_matches_exact_and_feeds_the_view(hybrid_cluster):
    """Two-variant cuts; the client plans (as %%mpiq distribute does), the run uses that partition,
    and the view counts every monitor's circuits from the engines' events."""
    from mpiq_magic.distribute.magic import plan_on_client
    from mpiq_magic.widgets import DistributeWidget

    circuit = cnot_ladder(9)
    planned = plan_on_client(hybrid_cluster.devices, circuit)
    view = DistributeWidget(mode="text")
    view.event(planned.event)
    assert view.monitors == {0: (0, 1), 1: (0, 2), 2: (0, 2)}
    result = hybrid_cluster.distribute(circuit, shots=SHOTS, partition=planned.partition, progress=view.event)
    ideal = exact(circuit)
    tv, bound = total_variation(result.counts, ideal), tv_bound(ideal, SHOTS)
    assert tv <= bound, f"TV {tv:.4f} > bound {bound:.4f}"
    # the check can fail: a ladder with other angles is far outside the bound
    assert total_variation(result.counts, exact(cnot_ladder(9, angle=0.6))) > bound
    assert result.partition == planned.partition.method
    assert [(b.qrank, b.variants) for b in result.blocks] == [(0, 1), (1, 2), (2, 2)] and result.executions == 5
    assert view.monitors == {0: (1, 1), 1: (2, 2), 2: (2, 2)} and view.result["shots"] == SHOTS


def test_a_subset_of_monitors(hybrid_cluster):
    circuit = cnot_ladder(6, angle=0.5)
    result = hybrid_cluster.distribute(circuit, shots=SHOTS, monitors=2)
    ideal = exact(circuit)
    assert total_variation(result.counts, ideal) <= tv_bound(ideal, SHOTS)
    assert [b.qrank for b in result.blocks] == [0, 1] and len(result.feed_forward_cuts) == 1


def test_quasi_probability_fallback_through_the_cluster(hybrid_cluster):
    """A cut whose control is rotated afterwards is not feed-forward: with observables the run falls
    back on quasi-probability cuts and returns expectation values within their standard errors."""
    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp

    from mpiq_magic.widgets import DistributeWidget

    qc = QuantumCircuit(4, name="one-cut")
    qc.h(0); qc.cx(0, 1); qc.ry(0.9, 2); qc.cx(2, 3); qc.cx(1, 2); qc.h(1); qc.rx(0.6, 2); qc.cx(2, 3)  # noqa: E702
    observables = ["ZZZZ", SparsePauliOp(["IZZI", "ZIIZ"], [0.7, 0.4])]
    sv = Statevector(qc)
    exact_values = [float(np.real(sv.expectation_value(SparsePauliOp(o)))) for o in observables]
    view, events = DistributeWidget(mode="text"), []

    def progress(event):
        events.append(event["event"])
        view.event(event)

    r = hybrid_cluster.distribute(qc, observables=observables, shots=2000, partition=[0, 0, 1, 1],
                                  max_overhead=50, progress=progress)
    assert type(r).__name__ == "QPDResult" and r.mode == "qpd" and r.overhead == pytest.approx(9.0)
    assert "fallback" in events and events.index("fallback") < events.index("result")
    for value, error, want in zip(r.expectation_values, r.standard_errors, exact_values):
        assert abs(value - want) <= 5 * error + 0.02, (value, error, want)
    assert sum(done for done, _ in view.monitors.values()) >= 1 and "done (quasi-probability cuts)" in view.summary()
    with pytest.raises(Exception, match="overhead"):
        hybrid_cluster.distribute(qc, observables=observables, shots=100, partition=[0, 0, 1, 1], max_overhead=5)
