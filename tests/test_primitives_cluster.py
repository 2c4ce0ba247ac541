"""Qiskit primitives on a real HybridCluster (1 classical + 3 monitors, the shared fixture).

``cluster.sampler()`` / ``cluster.estimator()`` are the same classes as headless; runs go through
classical rank 0 (circuits travel to it once, later runs send values only; payloads never pass
through the client), progress events reach the client, results come back as Qiskit objects.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]


def _ansatz():
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    theta = ParameterVector("t", 3)
    qc = QuantumCircuit(3, name="ansatz")
    for q in range(3):
        qc.ry(theta[q], q)
    qc.cx(0, 1)
    qc.cx(1, 2)
    return qc


def test_cluster_sampler_is_the_primitive_and_sends_values_only(hybrid_cluster):
    from qiskit.primitives import BaseSamplerV2, StatevectorSampler

    from mpiq_magic.primitives import SamplerV2

    events = []
    hybrid_cluster.progress.append(events.append)
    try:
        sampler = hybrid_cluster.sampler(seed=9)
        assert isinstance(sampler, SamplerV2) and isinstance(sampler, BaseSamplerV2)
        qc = _ansatz()
        qc.measure_all()
        values = np.linspace(0, np.pi, 12).reshape(4, 3)
        first = sampler.run([(qc, values)], shots=2000).result()[0]
        with hybrid_cluster.client_traffic() as traffic:
            second = sampler.run([(qc, values + 0.1)], shots=2000).result()[0]
    finally:
        hybrid_cluster.progress.remove(events.append)
    assert first.data.meas.shape == (4,) and first.data.meas.num_shots == 2000
    assert first.metadata["payloads_sent"] == 3 and second.metadata["payloads_sent"] == 0
    assert second.metadata["payload_cache_hits"] >= 3
    assert sorted(set(first.metadata["qranks"].tolist())) == [0, 1, 2]
    ref = StatevectorSampler(seed=9).run([(qc, values + 0.1)], shots=2000).result()[0]
    for i in range(4):
        mine, theirs = second.data.meas.get_counts(i), ref.data.meas.get_counts(i)
        tvd = 0.5 * sum(abs(mine.get(k, 0) - theirs.get(k, 0)) / 2000 for k in set(mine) | set(theirs))
        assert tvd < 0.1, (i, mine, theirs)
    # results come back (4 x 2000 shots x 1 byte packed) plus small messages, no payload, no QPY
    assert traffic["bytes"] < 4 * 2000 + 60_000, traffic
    assert any(e.get("event") == "scatter" for e in events) and any(e.get("event") == "gather" for e in events)


def test_cluster_estimator_and_too_wide(hybrid_cluster):
    from qiskit import QuantumCircuit
    from qiskit.primitives import StatevectorEstimator
    from qiskit.quantum_info import SparsePauliOp

    from monitor_engine.errors import CircuitTooWideError

    estimator = hybrid_cluster.estimator(seed=4, default_precision=0.02)
    qc = _ansatz()
    obs = [SparsePauliOp(["ZZI", "IXX"], [1.0, 0.5]), SparsePauliOp("YII")]
    values = np.array([[0.1, 0.7, 1.3], [1.0, 0.2, 0.4]])
    pub = (qc, [[o] for o in obs], values)  # (2, 1) observables x (2,) values -> (2, 2)
    mine = estimator.run([pub]).result()[0]
    exact = StatevectorEstimator().run([pub]).result()[0]
    assert mine.data.evs.shape == exact.data.evs.shape == (2, 2)
    assert np.all(np.abs(mine.data.evs - exact.data.evs) < 5 * np.maximum(mine.data.stds, 0.01))
    wide = QuantumCircuit(hybrid_cluster.devices[0].num_qubits + 1)
    wide.measure_all()
    with pytest.raises(CircuitTooWideError, match="qubits but the widest device"):
        hybrid_cluster.sampler().run([wide])
