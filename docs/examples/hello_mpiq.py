"""A first MPI-Q program: run it with ``mpiq run -c 1 -q 3 docs/examples/hello_mpiq.py``.

The classical rank scatters one Bell-pair circuit per device (paper Algorithm 2's send_q),
every monitor simulates its piece on qiskit-aer, and the counts are gathered back.
"""

from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator

from mpiq_magic import kernel as mpiq

hc = mpiq.init()  # classical ranks and devices come from `mpiq run` (or the defaults)
if hc.rank == 0:
    print(hc.topology, flush=True)

circuit = None
if hc.rank == 0:
    circuit = QuantumCircuit(2 * hc.quantum_size, 2 * hc.quantum_size)
    for j in range(hc.quantum_size):
        circuit.h(2 * j)
        circuit.cx(2 * j, 2 * j + 1)
    circuit.measure(range(circuit.num_qubits), range(circuit.num_clbits))

mine = hc.scatter(circuit, send_q=[[2 * j, 2 * j + 1] for j in range(hc.quantum_size)])
rec = hc.barrier(mpiq.QQ)
counts = None
if hc.is_quantum:
    counts = AerSimulator(seed_simulator=hc.qrank).run(mine, shots=1000).result().get_counts()
gathered = hc.gather({"device": hc.device.name, "counts": counts} if hc.is_quantum else None)
if hc.rank == 0:
    for j, item in enumerate(gathered):
        print(f"qrank {j} on {item['device']}: {dict(sorted(item['counts'].items()))}", flush=True)
if hc.qrank == 0:
    print(f"QQ barrier release skew: {rec.skew * 1e6:.1f} us", flush=True)
hc.free()
