"""What a run decided before it optimizes: the parts, where each runs, and on which regions.

:func:`~mpiq_magic.qaoa.run.distributed_qaoa` calls ``on_plan(split, parts)`` once, after the
split and the region search and before the first circuit runs, so a live view can draw the
graph by part and device and the regions on each device's coupling map while the optimizer works.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartPlan:
    """One part: its nodes, its monitor, its regions (physical qubits; empty in naive mode or
    for a part without internal edges) and the brute-force optimum of the part (None if too big)."""

    index: int
    nodes: tuple[int, ...]
    qrank: int
    device: str
    regions: tuple[tuple[int, ...], ...]
    region_fidelity: tuple[float, ...]
    template_edges: tuple[tuple[int, int], ...]
    optimum: float | None
    runs: bool  # False: no internal edge, nothing to optimize
