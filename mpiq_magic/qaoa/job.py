"""The MPI job behind ``mpiq qaoa``: ``mpiexec -n 1+Q python -m mpiq_magic.qaoa.job SPEC OUT``.

Monitors serve; classical rank 0 runs :func:`~mpiq_magic.qaoa.run.distributed_qaoa` through
``SamplerV2`` for every requested mode and writes ``{"runs": [...], "graph": ...}`` to OUT.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    from mpiq_magic import kernel

    hc = kernel.init(devices=spec.get("devices"), classical=1, timeout=spec.get("timeout", 600))
    if hc.is_quantum:
        from monitor_engine.serve import serve

        serve(hc)
        hc.free()
        return 0
    from mpiq_magic.primitives import SamplerV2

    from .graph import as_graph, classical_baseline, graph_to_dict
    from .run import distributed_qaoa

    graph = as_graph(spec["graph"])
    optimum, method = spec.get("optimum"), "given"
    if optimum is None:
        optimum, method = classical_baseline(graph)
    runs = []
    error = None
    with SamplerV2(hc, seed=spec.get("seed", 0)) as sampler:
        try:
            for mode in spec.get("modes", ["aware"]):
                t = time.perf_counter()
                result = distributed_qaoa(graph, sampler, mode=mode, optimum=optimum, **spec.get("options", {}))
                d = result.to_dict()
                d["optimum_method"] = method
                d["wall"] = time.perf_counter() - t
                runs.append(d)
                print(f"[mpiq qaoa] {mode}: cut {result.cut:g} / {optimum:g} ({method}) in {d['wall']:.1f} s",
                      file=sys.stderr, flush=True)
        except Exception as exc:  # reported in OUT, monitors still shut down by the with-block
            error = f"{type(exc).__name__}: {exc}"
    Path(out_path).write_text(json.dumps({
        "graph": graph_to_dict(graph), "optimum": optimum, "optimum_method": method,
        "devices": [d.name for d in hc.devices], "runs": runs, "error": error,
    }, default=str))
    hc.free()
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
