"""Feed-forward cuts: when a partitioned circuit can be run block by block with no sampling overhead.

A two-qubit gate ``G`` between qubits ``c`` (block A) and ``t`` (block B, another monitor) that is
*controlled in c's Z basis* (``G = |0><0|_c (x) U0 + |1><1|_c (x) U1``: CX, CY, CZ, CP, CRZ, RZZ,
CRX, ...) can be replaced by a Z measurement of ``c`` and a classically controlled ``U_c`` on
``t`` -- provided that every later operation on ``c`` keeps its Z value (Z-diagonal gates, the
control side of controlled gates, measurements). Then a Z-dephasing of ``c`` at the gate commutes
with everything after it, so it changes no Z-basis outcome: the joint distribution of every
measurement of the uncut circuit is the distribution of "run A, read ``c``'s bit, run B with
``U_bit``". This is the GHZ construction of the paper (section 5.2), for any circuit.

Block B then runs in one of two ways:

* **Pauli frame** (``mode="frame"``): ``U1 U0^dagger`` is a Pauli ``P`` (CX, CY, CZ, RZZ(pi), ...)
  and every operation of B in ``P``'s forward light cone maps it to a Pauli (Clifford gates, or any
  gate that happens to commute). B runs once with ``U0``; ``P`` is propagated classically
  (``U P U^dagger`` gate by gate) and its X part says which of B's clbits flip when the bit is 1.
* **Variants** (``mode="variant"``): otherwise (a non-Clifford remainder, CP(theta), CRY, ...) B
  runs in ``2^v`` variants (``U0``/``U1`` for each of its v variant cuts) and shot k of B is taken
  from the variant its incoming bits select.

Shot k of every block is paired with shot k of every other; bits are corrected in a topological
order of the (block, bit) dependencies, so chains and even blocks that feed each other work as
long as no bit depends on itself through variants. Gates with ``U1 = e^{i phi} U0`` are not cuts at
all (a phase on c and ``U0`` on t, ``mode="local"``).

Exactness: the Z-basis distribution of the uncut circuit is sampled exactly, ideal and under
Pauli gate noise on the blocks (Pauli channels commute with Pauli frames and with the
dephasing), with the cut gates themselves ideal (a classical link). Readout error on a control
bit propagates into the blocks it feeds. Observables that need coherence across blocks are not
reconstructed: they need quasi-probability cutting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any, Mapping, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit.library import RZGate

from ..kernel.errors import UsageError
from .layering import IGNORED, LayeredCircuit, layer_circuit
from .paulis import conjugate as _conjugate, gate_for, keeps_z as _keeps_z, matrix as _matrix, proportional as _proportional, split as _split, which_pauli

class FeedForwardError(UsageError):
    """A circuit or partition that feed-forward cutting cannot run exactly; nothing was sent.

    ``gate`` (name), ``layer`` (time layer of the partitioner's layering), ``instruction`` (index
    in the normalised circuit), ``qubits`` and ``reason`` say which gate failed and why.
    """

    def __init__(self, message: str, *, gate: str | None = None, layer: int | None = None,
                 instruction: int | None = None, qubits: Sequence[int] = (), reason: str = ""):
        super().__init__(message)
        self.gate = gate
        self.layer = layer
        self.instruction = instruction
        self.qubits = tuple(qubits)
        self.reason = reason


class VariantLimitError(FeedForwardError):
    """A block would need more variants (2^cuts) than ``max_variants`` allows."""


QPD_HINT = (
    "Z-basis feed-forward cannot run it exactly; use quasi-probability cutting "
    "(qiskit-addon-cutting) or a partition that keeps this gate on one monitor."
)


# ----------------------------------------------------------------------------- plan types
@dataclass(frozen=True)
class CutGate:
    """A two-qubit gate between two monitors, replaced by a classical link."""

    id: int
    instruction: int  # index in FeedForwardPlan.circuit.data
    layer: int
    gate: str
    control: int  # global qubit whose Z value is read (the source side)
    target: int  # global qubit the conditional U acts on
    source: int  # qrank of the control's block
    dest: int  # qrank of the target's block
    mode: str  # "frame" | "variant" | "local"
    pauli: str | None  # U1 U0^dagger for frames
    u0: np.ndarray = field(repr=False, compare=False)
    u1: np.ndarray = field(repr=False, compare=False)
    clbit: int | None = None  # local clbit of the source block holding the control bit

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate, "layer": self.layer, "instruction": self.instruction,
            "control": self.control, "target": self.target, "source_qrank": self.source,
            "dest_qrank": self.dest, "mode": self.mode, "pauli": self.pauli,
        }


@dataclass
class Block:
    """The qubits of one monitor and the circuits it runs (one per variant)."""

    qrank: int
    qubits: tuple[int, ...]  # global qubits, local index = position
    num_clbits: int = 0
    entries: list = field(default_factory=list, repr=False)
    variant_cuts: tuple[int, ...] = ()  # cut ids; bit j of a variant index = cut variant_cuts[j]
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # cut id -> uint8 mask over clbits
    circuits: list[QuantumCircuit] = field(default_factory=list, repr=False)

    @property
    def num_variants(self) -> int:
        return 1 << len(self.variant_cuts)

    @property
    def runs(self) -> bool:
        """False when nothing of this block is read (no clbit): it is not executed."""
        return self.num_clbits > 0


@dataclass
class FeedForwardPlan:
    """Everything needed to run a circuit as feed-forward blocks and stitch the shots back."""

    circuit: QuantumCircuit  # the normalised circuit the plan refers to
    layered: LayeredCircuit = field(repr=False)
    blocks: dict[int, Block]  # by qrank
    cuts: list[CutGate]
    outputs: dict[int, tuple[int, int]]  # global clbit -> (qrank, local clbit) of its last writer
    order: list[tuple[str, int]]  # ("raw", qrank) / ("bit", cut id) in dependency order
    measured_all: bool = False  # the input had no measurement: every qubit was measured at the end

    @property
    def num_clbits(self) -> int:
        return self.circuit.num_clbits

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits

    def mode_counts(self) -> dict[str, int]:
        out = {"frame": 0, "variant": 0, "local": 0}
        for c in self.cuts:
            out[c.mode] += 1
        return out

    @property
    def executions(self) -> int:
        """Circuits run per shot: one per running block and variant (the sampling cost)."""
        return sum(b.num_variants for b in self.blocks.values() if b.runs)

    def summary(self) -> str:
        m = self.mode_counts()
        return (
            f"{self.num_qubits} qubits in {len(self.blocks)} block(s) on qranks {sorted(self.blocks)}: "
            f"{m['frame']} Pauli-frame cut(s), {m['variant']} two-variant cut(s), {m['local']} local; "
            f"{self.executions} circuit(s) per shot"
        )


# ----------------------------------------------------------------------------- planning
def blocks_from_partition(partition, circuit: QuantumCircuit | None = None) -> dict[int, int]:
    """``qubit -> qrank`` from a :class:`~.partition.PartitionResult`, a sequence (qubit -> qrank) or
    a mapping; the qubits of each qrank form its block.

    Raises:
        FeedForwardError: a qubit moves between qranks (a teleportation): feed-forward blocks are static.
    """
    if isinstance(partition, Mapping):
        return {int(q): int(p) for q, p in partition.items()}
    assignment = getattr(partition, "assignment", None)
    if assignment is None:
        return {q: int(p) for q, p in enumerate(partition) if p is not None and int(p) >= 0}
    out: dict[int, int] = {}
    for t, row in enumerate(assignment):
        for q, p in enumerate(row):
            if p < 0:
                continue
            if q in out and out[q] != p:
                raise FeedForwardError(
                    f"The partition moves qubit {q} from qrank {out[q]} to qrank {p} at layer {t} "
                    f"(a teleportation); feed-forward blocks need every qubit on one monitor. Use "
                    f"partition_circuit(..., method='static') or pass qubit -> qrank directly.",
                    layer=t, qubits=(q,), reason="teleportation",
                )
            out[q] = p
    return out


def plan_feedforward(
    circuit: QuantumCircuit,
    qrank_of: Mapping[int, int] | Sequence[int] | Any,
    *,
    max_variants: int = 16,
    layered: LayeredCircuit | None = None,
) -> FeedForwardPlan:
    """Check that every gate between blocks is a feed-forward cut and build the block circuits.

    ``qrank_of``: ``qubit -> qrank`` (mapping or sequence) or a ``PartitionResult``. A circuit
    without measurements gets ``measure_all``.

    Raises:
        FeedForwardError: a gate between blocks cannot be a feed-forward cut (the message names the
            gate, its layer and qubits, and why), the partition moves a qubit, or the bits depend
            on each other in a cycle.
        VariantLimitError: a block needs more than ``max_variants`` variants.
        PartitionError: the circuit has control flow.
    """
    measured_all = not any(inst.operation.name == "measure" for inst in circuit.data)
    if measured_all:
        circuit = circuit.measure_all(inplace=False)
    lc = layered if layered is not None and not measured_all else layer_circuit(circuit)
    qc = lc.circuit
    owner = blocks_from_partition(qrank_of, qc)
    qindex = {q: i for i, q in enumerate(qc.qubits)}
    cindex = {c: i for i, c in enumerate(qc.clbits)}
    ops = []
    for i, inst in enumerate(qc.data):
        if inst.operation.name in IGNORED:
            continue
        ops.append((i, inst.operation, [qindex[q] for q in inst.qubits], [cindex[c] for c in inst.clbits]))
    for i, _op, qs, _cs in ops:
        missing = [q for q in qs if q not in owner]
        if missing:
            raise FeedForwardError(
                f"Qubit {missing[0]} is used by instruction {i} ({qc.data[i].operation.name!r}) but the "
                f"partition gives it no qrank.", instruction=i, qubits=missing, reason="unassigned",
            )
    # after[q][k]: position in ``ops`` of the first op on q at or after k that changes q's Z value
    first_bad: dict[int, list[tuple[int, int]]] = {}
    for k, (i, op, qs, _cs) in enumerate(ops):
        for pos, q in enumerate(qs):
            if not _keeps_z(op, pos, len(qs)):
                first_bad.setdefault(q, []).append((k, i))

    def next_bad(q: int, k: int) -> tuple[int, int] | None:
        for kk, i in first_bad.get(q, ()):
            if kk > k:
                return kk, i
        return None

    blocks = {p: Block(p, tuple(sorted(q for q, o in owner.items() if o == p))) for p in sorted(set(owner.values()))}
    local = {q: blocks[p].qubits.index(q) for q, p in owner.items()}
    cuts: list[CutGate] = []
    outputs: dict[int, tuple[int, int]] = {}
    pending: dict[int, list] = {}  # control qubit -> its placeholder measurement entry, while nothing touched it
    slots: dict[int, list] = {}  # cut id -> the placeholder entry that will hold its bit

    def new_clbit(block: Block) -> int:
        block.num_clbits += 1
        return block.num_clbits - 1

    def touch(q: int, op=None, clbit: int | None = None) -> None:
        """An operation reaches q: resolve q's pending control-bit measurement."""
        entry = pending.pop(q, None)
        if entry is None:
            return
        if op is not None and op.name == "measure":
            entry[0] = "dropped"
            entry[2] = clbit  # the user's own measurement carries the bit
        else:
            entry[0] = "measure"
            entry[2] = new_clbit(blocks[owner[q]])

    for k, (i, op, qs, cs) in enumerate(ops):
        parts = {owner[q] for q in qs}
        if len(parts) == 1:
            block = blocks[owner[qs[0]]]
            lcs = [new_clbit(block) for _ in cs] if op.name == "measure" else []
            for q in qs:
                touch(q, op, lcs[0] if lcs else None)
            if op.name == "measure":
                outputs[cs[0]] = (block.qrank, lcs[0])
            elif cs:
                raise FeedForwardError(
                    f"Instruction {i} ({op.name!r}) writes classical bits; only measurements may.",
                    gate=op.name, instruction=i, qubits=qs, reason="classical",
                )
            block.entries.append(["op", op, [local[q] for q in qs], lcs])
            continue
        cuts.append(_cut(lc, qc, k, i, op, qs, owner, len(cuts), next_bad))
        cut = cuts[-1]
        if cut.mode == "local":
            phase = _proportional(cut.u1, cut.u0)
            if abs(phase - 1) > 1e-9:
                touch(cut.control)
                blocks[cut.source].entries.append(["op", RZGate(float(np.angle(phase))), [local[cut.control]], []])
            touch(cut.target)
            blocks[cut.dest].entries.append(["insert", cut.id, local[cut.target], None])
            continue
        entry = pending.get(cut.control)
        if entry is None:
            entry = pending[cut.control] = ["pending", local[cut.control], None]
            blocks[cut.source].entries.append(entry)
        slots[cut.id] = entry
        touch(cut.target)
        blocks[cut.dest].entries.append(["insert", cut.id, local[cut.target], None])
    for q in list(pending):
        touch(q)
    cuts = [_with_clbit(c, slots[c.id][2]) if c.id in slots else c for c in cuts]
    by_id = {c.id: c for c in cuts}
    _frames(blocks, by_id)
    cuts = [by_id[c.id] for c in cuts]
    for block in blocks.values():
        variants = tuple(e[1] for e in block.entries if e[0] == "insert" and by_id[e[1]].mode == "variant")
        block.variant_cuts = variants
        if (1 << len(variants)) > max_variants:
            names = ", ".join(f"{by_id[j].gate} at layer {by_id[j].layer}" for j in variants)
            raise VariantLimitError(
                f"Block on qrank {block.qrank} needs {1 << len(variants)} variants for its "
                f"{len(variants)} non-Pauli-frame cut(s) ({names}), more than max_variants="
                f"{max_variants}; raise max_variants, choose a partition with fewer cuts into it, or "
                f"use quasi-probability cutting.",
                qubits=block.qubits, reason="variants",
            )
        block.circuits = [_build(block, by_id, v) for v in range(block.num_variants)] if block.runs else []
    order = _order(blocks, cuts)
    return FeedForwardPlan(qc, lc, blocks, cuts, outputs, order, measured_all)


def _cut(lc, qc, k, i, op, qs, owner, cid, next_bad) -> CutGate:
    layer = lc.instruction_layer[i]
    where = (
        f"Gate {op.name!r} on qubits {qs[0]} (qrank {owner[qs[0]]}) and {qs[1]} (qrank {owner[qs[1]]}) "
        f"at layer {layer} (instruction {i})"
    )
    m = _matrix(op)
    if m is None or len(qs) != 2:
        raise FeedForwardError(
            f"{where} has no fixed matrix (unbound parameters?); bind them first. {QPD_HINT}",
            gate=op.name, layer=layer, instruction=i, qubits=qs, reason="no-matrix",
        )
    splits = {side: _split(m, side) for side in (0, 1)}
    for side, s in splits.items():  # a product of local gates: no cut at all
        if s is not None and _proportional(s[1], s[0]) is not None:
            return CutGate(cid, i, layer, op.name, qs[side], qs[1 - side], owner[qs[side]], owner[qs[1 - side]],
                           "local", None, s[0], s[1])
    why = []
    for side, s in splits.items():
        if s is None:
            continue
        bad = next_bad(qs[side], k)
        if bad is None:
            u0, u1 = s
            pauli = which_pauli(u1 @ u0.conj().T)
            return CutGate(cid, i, layer, op.name, qs[side], qs[1 - side], owner[qs[side]], owner[qs[1 - side]],
                           "frame" if pauli else "variant", pauli, u0, u1)
        j = bad[1]
        why.append(
            f"its control qubit {qs[side]} is not only measured afterwards: {qc.data[j].operation.name!r} at "
            f"layer {lc.instruction_layer[j]} (instruction {j}) changes its Z value"
        )
    if not why:
        why.append("it is not controlled in the Z basis of either qubit")
    raise FeedForwardError(
        f"{where} cannot be a feed-forward cut: {'; '.join(why)}. {QPD_HINT}",
        gate=op.name, layer=layer, instruction=i, qubits=qs, reason=why[0],
    )


def _with_clbit(cut: CutGate, clbit: int) -> CutGate:
    from dataclasses import replace

    return replace(cut, clbit=clbit)


def _frames(blocks: dict[int, Block], cuts: dict[int, CutGate]) -> None:
    """Propagate each frame cut's Pauli through its block; demote to ``variant`` where it cannot."""
    changed = True
    while changed:
        changed = False
        for cut in list(cuts.values()):
            if cut.mode != "frame":
                continue
            block = blocks[cut.dest]
            mask = _propagate(block, cuts, cut)
            if mask is None:
                from dataclasses import replace

                cuts[cut.id] = replace(cut, mode="variant")
                block.frames.pop(cut.id, None)
                changed = True
            else:
                block.frames[cut.id] = mask


def _propagate(block: Block, cuts: dict[int, CutGate], cut: CutGate) -> np.ndarray | None:
    n = len(block.qubits)
    labels = ["I"] * n
    mask = np.zeros(block.num_clbits, np.uint8)
    start = next(k for k, e in enumerate(block.entries) if e[0] == "insert" and e[1] == cut.id)
    labels[block.entries[start][2]] = cut.pauli
    for entry in block.entries[start + 1:]:
        kind = entry[0]
        if kind == "measure":
            if labels[entry[1]] in "XY":
                mask[entry[2]] ^= 1
            continue
        if kind in ("pending", "dropped"):
            continue
        if kind == "insert":
            other = cuts[entry[1]]
            q = entry[2]
            if labels[q] == "I":
                continue
            options = [other.u0] if other.mode != "variant" else [other.u0, other.u1]
            results = {tuple(_conjugate(u, [labels[q]]) or ["?"]) for u in options}
            if len(results) != 1 or ("?",) in results:
                return None
            labels[q] = next(iter(results))[0]
            continue
        _, op, qargs, cargs = entry
        if all(labels[q] == "I" for q in qargs):
            continue
        if op.name == "measure":
            if labels[qargs[0]] in "XY":
                mask[cargs[0]] ^= 1
            continue
        if op.name == "reset":
            labels[qargs[0]] = "I"
            continue
        m = _matrix(op)
        new = None if m is None else _conjugate(m, [labels[q] for q in qargs])
        if new is None:
            return None
        for q, label in zip(qargs, new):
            labels[q] = label
        if all(label == "I" for label in labels):
            break
    return mask


def _build(block: Block, cuts: dict[int, CutGate], variant: int) -> QuantumCircuit:
    qc = QuantumCircuit(len(block.qubits), block.num_clbits, name=f"ff-q{block.qrank}-v{variant}")
    for entry in block.entries:
        kind = entry[0]
        if kind == "op":
            qc.append(entry[1], entry[2], entry[3])
        elif kind == "measure":
            qc.measure(entry[1], entry[2])
        elif kind == "insert":
            cut = cuts[entry[1]]
            use_u1 = cut.mode == "variant" and (variant >> block.variant_cuts.index(cut.id)) & 1
            gate = gate_for(cut.u1 if use_u1 else cut.u0)
            if gate is not None:
                qc.append(gate, [entry[2]])
    return qc


def _order(blocks: dict[int, Block], cuts: list[CutGate]) -> list[tuple[str, int]]:
    """A dependency order of raw block outcomes and control bits.

    Raises:
        FeedForwardError: a bit depends on itself (blocks feed each other through variants).
    """
    graph: dict[tuple[str, int], set] = {("raw", p): set() for p in blocks}
    for p, block in blocks.items():
        graph[("raw", p)] |= {("bit", j) for j in block.variant_cuts}
    for cut in cuts:
        if cut.mode == "local":
            continue
        src = blocks[cut.source]
        deps = {("raw", cut.source)}
        deps |= {("bit", j) for j, mask in src.frames.items() if mask[cut.clbit]}
        graph[("bit", cut.id)] = deps
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        nodes = exc.args[1]
        named = [f"{cuts[n[1]].gate} at layer {cuts[n[1]].layer} (qubit {cuts[n[1]].control} -> {cuts[n[1]].target})"
                 for n in nodes if n[0] == "bit"]
        raise FeedForwardError(
            f"The feed-forward bits depend on each other in a cycle through two-variant blocks: "
            f"{'; '.join(dict.fromkeys(named))}. Blocks that feed each other need a Pauli-frame "
            f"(Clifford) remainder on one side. {QPD_HINT}",
            reason="cycle",
        ) from None
