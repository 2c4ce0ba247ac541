"""A new workload on the one dispatch path, in under 50 lines: an angle sweep.

Run it with ``mpiq run -c 1 -q 3 docs/examples/angle_sweep.py``. Classical rank 0 binds one
parameterized circuit to every angle; each bound circuit is a Share that the dispatcher places
on the least-loaded monitor whose device fits, compiles for that device and sends over MPI-Q;
the monitors serve the job; results stream back. Deadlines, dead monitors, placement and the
typed result come from ``monitor_engine.dispatch`` -- the workload only says what to run.
"""

import math

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from mpiq_magic import kernel as mpiq
from monitor_engine.dispatch import Share, dispatch
from monitor_engine.protocol import collective_job
from monitor_engine.serve import serve


def angle_sweep(hc, circuit, angles, shots=1000):
    """Collective: rank 0 returns P(1) for each angle; every other process returns None."""
    job = collective_job(hc, "sweep")  # the same id on every process
    if hc.is_quantum:
        serve(hc, job=job)  # execute this job's payloads, then return
        return None
    if hc.rank != 0:
        return None
    shares = [Share(circuit=circuit.assign_parameters([a]), shots=shots) for a in angles]
    outcome = dispatch(hc, shares, job=job, participants=range(hc.quantum_size))
    if not outcome.ok:
        raise RuntimeError(f"missing {outcome.missing}, errors {outcome.errors}")
    return [(r.counts.get("1", 0) / r.shots, q) for r, q in zip(outcome.results, outcome.placement)]


theta = Parameter("theta")
qc = QuantumCircuit(1, 1)
qc.ry(theta, 0)
qc.measure(0, 0)

hc = mpiq.init()
angles = [k * math.pi / 6 for k in range(7)]
swept = angle_sweep(hc, qc, angles)
if swept is not None:
    for a, (p1, qrank) in zip(angles, swept):
        print(f"theta={a:.3f} P(1)={p1:.3f} expected={math.sin(a / 2) ** 2:.3f} qrank={qrank}", flush=True)
hc.free()
