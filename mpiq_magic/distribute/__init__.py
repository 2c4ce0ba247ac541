"""Distribute circuits over the monitors. This package: the partitioner (seed 002).

:func:`partition_circuit` turns a Qiskit circuit and the monitors' widths into a
:class:`PartitionResult`: qubit -> qrank per time layer, e-bits in total and per layer.
See docs/distribute.md.
"""

from .errors import CapacityError, PartitionError
from .hypergraph import evaluate
from .layering import LayeredCircuit, layer_circuit
from .network import Network, make_network
from .partition import METHODS, PartitionResult, partition_circuit

__all__ = [
    "METHODS",
    "CapacityError",
    "LayeredCircuit",
    "Network",
    "PartitionError",
    "PartitionResult",
    "evaluate",
    "layer_circuit",
    "make_network",
    "partition_circuit",
]
