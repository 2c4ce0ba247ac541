"""Noise-aware distributed QAOA for MaxCut on the hybrid cluster (seed 002, Algorithm 1).

``distributed_qaoa(graph, target, p=1, eta=0.05, k=2, mode="aware")`` — see :mod:`.run`;
regions: :mod:`.regions`; circuits: :mod:`.circuits`; split: :mod:`.split`; merge: :mod:`.merge`.
Docs: docs/qaoa.md.
"""

from .graph import (
    as_graph, brute_force_maxcut, classical_baseline, cut_value, heuristic_maxcut, milp_maxcut, regular_graph,
)
from .merge import MergeResult, merge_solutions
from .plan import PartPlan
from .regions import Region, RegionSet, check_regions, device_errors, find_regions, usable_graph
from .run import QAOAResult, SubproblemResult, distributed_qaoa, run_headless
from .split import Split, split_graph

__all__ = [
    "QAOAResult", "SubproblemResult", "PartPlan", "distributed_qaoa", "run_headless",
    "Region", "RegionSet", "find_regions", "check_regions", "usable_graph", "device_errors",
    "Split", "split_graph", "MergeResult", "merge_solutions",
    "as_graph", "brute_force_maxcut", "classical_baseline", "cut_value", "heuristic_maxcut", "milp_maxcut",
    "regular_graph",
]
