"""Soak: many magic cells and start/stop cycles in one real Jupyter kernel; resources flat?

In one kernel (driven through nbclient, widgets forced on with ``MPIQ_WIDGETS=widget`` so the
live dashboards are exercised):

* ``--cells`` cells of mixed magics on one cluster (``%mpiq barrier QQ``, ``%mpiq barrier CC``,
  ``%mpiq status``, ``%%mpiq gather``, ``%%mpiq run``, ``%%mpiq scatter`` in turn);
* ``--cycles`` ``%mpiq start`` / ``%mpiq stop`` cycles.

Before and after each phase it records the kernel's RSS, threads, open descriptors, live
ipywidgets and the number of processes on the machine that descend from the kernel, and after
the run the processes of ours still alive anywhere (orphans). Flat means: widgets and
descriptors equal, threads equal, RSS within a few MiB, no process left after the cycles.

    .venv/bin/python benchmarks/soak.py                       # 500 cells, 20 cycles
    .venv/bin/python benchmarks/soak.py --cells 100 --cycles 5

Writes benchmarks/results/soak.json. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))

PROBE = """
import gc, json, os, threading, warnings, psutil
gc.collect()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import ipywidgets
        _w = len(ipywidgets.Widget.widgets)
    except Exception:
        _w = -1
_p = psutil.Process()
_kids = {c.pid: c.create_time() for c in _p.children(recursive=True)}
print("SOAK", json.dumps({"tree": _kids, "rss_mib": round(_p.memory_info().rss / 2**20, 1), "threads": threading.active_count(),
    "os_threads": _p.num_threads(), "fds": _p.num_fds(), "widgets": _w,
    "children": len(_p.children(recursive=True))}), "END")
"""

CELLS = [
    "%mpiq barrier QQ",
    "%mpiq barrier CC",
    "%mpiq status",
    "%%mpiq gather --var x\nx = hc.qrank * 2",
    "%%mpiq run --targets classical\ny = hc.rank",
    "%%mpiq scatter --shots 64\nfrom qiskit import QuantumCircuit\ncircuits = []\n"
    "for n in (2, 2):\n    qc = QuantumCircuit(n); qc.h(0); qc.cx(0, 1); qc.measure_all(); circuits.append(qc)",
]


SEEN: dict[int, float] = {}  # every process that descended from the kernel at a probe


def probe(session) -> dict:
    text = session.run(PROBE).text
    out = json.loads(text.split("SOAK", 1)[1].split("END", 1)[0])
    SEEN.update({int(k): v for k, v in out.pop("tree").items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--quantum", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    from cluster_fixtures import KernelSession

    import psutil

    report: dict = {"cells": args.cells, "cycles": args.cycles, "quantum": args.quantum,
                    "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    t0 = time.perf_counter()
    with KernelSession(timeout=300) as k:
        assert k.run("%load_ext mpiq_magic\nimport os\nos.environ['MPIQ_WIDGETS'] = 'widget'").error is None
        kernel_pid = int(k.run("import os; print(os.getpid())").text.strip())
        r = k.run(f"%mpiq start -c 1 -q {args.quantum}")
        assert r.error is None, r.error_text
        probe(k)  # records the cluster's processes
        for cell in CELLS:  # warm-up: first-use imports and caches are not leaks
            r = k.run(cell)
            assert r.error is None, (cell, r.error_text)
        cells_before = probe(k)
        errors = 0
        t = time.perf_counter()
        for i in range(args.cells):
            r = k.run(CELLS[i % len(CELLS)])
            errors += r.error is not None
        cells_seconds = time.perf_counter() - t
        cells_after = probe(k)
        k.run("%mpiq stop")
        cycles_before = probe(k)
        t = time.perf_counter()
        for _ in range(args.cycles):
            r = k.run(f"%mpiq start -c 1 -q {args.quantum}")
            errors += r.error is not None
            probe(k)
            k.run("%mpiq stop")
        cycles_seconds = time.perf_counter() - t
        cycles_after = probe(k)
        report.update(
            cells_phase={"before": cells_before, "after": cells_after, "seconds": round(cells_seconds, 1)},
            cycles_phase={"before": cycles_before, "after": cycles_after, "seconds": round(cycles_seconds, 1)},
            errors=errors,
        )
    # after the kernel is gone: any process that ever descended from it and is still alive
    time.sleep(2)
    orphans = []
    for pid, created in SEEN.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                orphans.append(" ".join(p.cmdline())[:120])
        except psutil.Error:
            pass
    report["processes_seen"] = len(SEEN)
    report["orphans_after_kernel_exit"] = orphans
    report["kernel_pid"] = kernel_pid
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    report["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    delta = lambda ph: {k: round(ph["after"][k] - ph["before"][k], 1) for k in ph["before"]}  # noqa: E731
    report["cells_delta"] = delta(report["cells_phase"])
    report["cycles_delta"] = delta(report["cycles_phase"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("cells_delta", "cycles_delta", "errors", "orphans_after_kernel_exit", "total_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
