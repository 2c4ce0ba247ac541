"""The notebook path, driven through a real Jupyter kernel, against ipyparallel's own.

In one run, in one kernel (every time is the wall time of executing a cell, as a notebook
frontend sees it: execute request to idle):

* start: ``%mpiq start -c 1 -q 3`` (and ``%mpiq stop``) against ipyparallel's own
  ``Cluster(engines="mpi", n=4).start_and_connect_sync()`` with the same bundled ``mpiexec``,
  alternating, ``--starts`` times each. Targets: mpiq start <= ipyparallel start + 2 s.
* round trip: ``%%mpiq scatter`` of 8 small circuits (built in the cell on rank 0, compiled
  there, sent over MPI-Q, run on 3 monitors, results back in ``results``) against an empty
  ``%%px pass`` cell on the same four engines, ``--repeat`` times each. Target: scatter <=
  ``%%px`` + 10 ms + the circuits' own simulation time. The simulation time of one scatter is
  its critical path: the largest, over monitors, of the summed ``load + execute`` times of the
  circuits that monitor ran (they run in parallel across monitors, in turn on one monitor).

    .venv/bin/python benchmarks/notebook.py                # 3 starts each, 30 round trips each
    .venv/bin/python benchmarks/notebook.py --starts 5 --repeat 50

Writes benchmarks/results/notebook.json and .md. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SETUP = """
import json, time, tempfile, shutil
import ipyparallel as ipp
from traitlets.config import Config
from mpiq_magic.launch import mpiexec_path
%load_ext mpiq_magic
"""

IPP_START = """
_cfg = Config()
_cfg.MPIEngineSetLauncher.mpi_cmd = [mpiexec_path()]
_profile = tempfile.mkdtemp(prefix="ipp-bench-")
ipp_cluster = ipp.Cluster(engines="mpi", n=4, config=_cfg, profile_dir=_profile)
ipp_client = ipp_cluster.start_and_connect_sync()
assert len(ipp_client.ids) == 4
"""

IPP_STOP = """
ipp_client.close()
ipp_cluster.stop_cluster_sync()
shutil.rmtree(_profile, ignore_errors=True)
"""

SCATTER = """%%mpiq scatter --shots 100 --out results
from qiskit import QuantumCircuit
circuits = []
for n in (2, 3, 4, 2, 3, 4, 2, 3):
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    circuits.append(qc)
"""

SIM_TIME = """
_per_monitor = {}
for _r in results:
    _per_monitor[_r.qrank] = _per_monitor.get(_r.qrank, 0.0) + _r.timings["load"] + _r.timings["execute"]
print("SIM " + json.dumps({"critical": max(_per_monitor.values()),
                           "sum": sum(_r.timings["load"] + _r.timings["execute"] for _r in results)}))
"""


class Kernel:
    """A real IPython kernel (jupyter_client); ``run`` times one cell as a frontend sees it."""

    def __init__(self):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT))

    def run(self, code: str, timeout: float = 300) -> tuple[float, str]:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg):
            kind = msg["header"]["msg_type"]
            content = msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        t0 = time.perf_counter()
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=False)
        elapsed = time.perf_counter() - t0
        if reply["content"]["status"] != "ok" or errors:
            raise RuntimeError(f"Cell failed:\n{code}\n{''.join(out)}\n{''.join(errors)}")
        return elapsed, "".join(out)

    def close(self) -> None:
        try:
            self.run("from mpiq_magic.magics import shutdown_active_cluster\nshutdown_active_cluster()")
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure(starts: int, repeat: int) -> dict:
    kernel = Kernel()
    try:
        kernel.run(SETUP)
        start_mpiq, start_ipp, ready_mpiq, stop_mpiq = [], [], [], []
        for i in range(starts):
            # alternate, so drifting machine load hits both alike
            order = ("ipp", "mpiq") if i % 2 == 0 else ("mpiq", "ipp")
            for which in order:
                if which == "ipp":
                    start_ipp.append(kernel.run(IPP_START)[0])
                    kernel.run(IPP_STOP)
                else:
                    start_mpiq.append(kernel.run("%mpiq start -c 1 -q 3")[0])
                    ready_mpiq.append(start_mpiq[-1] + kernel.run("mpiq_cluster.wait_ready()")[0])
                    stop_mpiq.append(kernel.run("%mpiq stop")[0])
        kernel.run("%mpiq start -c 1 -q 3")
        kernel.run("mpiq_cluster.wait_ready()")
        kernel.run("_px_view = mpiq_cluster.client[:]\n_px_view.block = True\n_px_view.activate()")
        kernel.run(SCATTER)  # cold: compiles the circuits once (cache), not counted
        kernel.run("%%px\npass")
        scatter, px, sim_critical, sim_sum = [], [], [], []
        for _ in range(repeat):
            px.append(kernel.run("%%px\npass")[0])
            scatter.append(kernel.run(SCATTER)[0])
            sim = json.loads(kernel.run(SIM_TIME)[1].split("SIM ", 1)[1])
            sim_critical.append(sim["critical"])
            sim_sum.append(sim["sum"])
        kernel.run("%mpiq stop")
    finally:
        kernel.close()
    allowance = [p + 0.010 + s for p, s in zip(px, sim_critical)]
    return {
        "start": {
            "mpiq_start_s": start_mpiq,
            "mpiq_start_until_warm_s": ready_mpiq,
            "ipyparallel_start_s": start_ipp,
            "mpiq_stop_s": stop_mpiq,
            "median_mpiq_s": median(start_mpiq),
            "median_ipyparallel_s": median(start_ipp),
            "median_mpiq_until_warm_s": median(ready_mpiq),
            "difference_s": median(start_mpiq) - median(start_ipp),
            "target": "mpiq start <= ipyparallel start + 2 s",
            "ok": median(start_mpiq) <= median(start_ipp) + 2.0,
        },
        "round_trip": {
            "circuits": 8,
            "monitors": 3,
            "shots": 100,
            "scatter_s": scatter,
            "px_pass_s": px,
            "simulation_critical_path_s": sim_critical,
            "simulation_sum_s": sim_sum,
            "median_scatter_s": median(scatter),
            "median_px_pass_s": median(px),
            "median_simulation_critical_path_s": median(sim_critical),
            "median_simulation_sum_s": median(sim_sum),
            "median_overhead_s": median([s - p - c for s, p, c in zip(scatter, px, sim_critical)]),
            "target": "scatter <= %%px pass + 10 ms + simulation critical path",
            "runs_within_target": sum(s <= a for s, a in zip(scatter, allowance)),
            "ok": median(scatter) <= median(px) + 0.010 + median(sim_critical),
        },
    }


def markdown(data: dict) -> str:
    s, r = data["start"], data["round_trip"]
    ms = lambda v: f"{v * 1e3:.1f}"  # noqa: E731
    return "\n".join([
        f"<!-- generated by `python benchmarks/notebook.py --starts {data['starts']} --repeat {data['repeat']}` "
        f"on {data['date']}, {data['cores']} cores -->",
        "",
        "Cell wall times through a real Jupyter kernel (execute request to idle); medians.",
        "",
        "| start-up | median (s) | runs (s) |",
        "|---|---:|---|",
        f"| `%mpiq start -c 1 -q 3` | {s['median_mpiq_s']:.2f} | {', '.join(f'{v:.2f}' for v in s['mpiq_start_s'])} |",
        f"| ipyparallel `Cluster(engines='mpi', n=4).start_and_connect_sync()` | {s['median_ipyparallel_s']:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in s['ipyparallel_start_s'])} |",
        f"| `%mpiq start` + `wait_ready()` (qiskit/aer imported on the engines) | {s['median_mpiq_until_warm_s']:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in s['mpiq_start_until_warm_s'])} |",
        "",
        f"Target mpiq <= ipyparallel + 2 s: difference {s['difference_s']:+.2f} s -> **{'ok' if s['ok'] else 'no'}**.",
        "",
        f"| round trip ({r['circuits']} circuits, {r['monitors']} monitors, {r['shots']} shots) | median (ms) |",
        "|---|---:|",
        f"| `%%px pass` (same 4 engines) | {ms(r['median_px_pass_s'])} |",
        f"| `%%mpiq scatter` | {ms(r['median_scatter_s'])} |",
        f"| simulation, critical path (max over monitors of load + execute) | {ms(r['median_simulation_critical_path_s'])} |",
        f"| simulation, sum over circuits | {ms(r['median_simulation_sum_s'])} |",
        f"| scatter - px - critical path | {ms(r['median_overhead_s'])} |",
        "",
        f"Target scatter <= px + 10 ms + simulation: **{'ok' if r['ok'] else 'no'}** "
        f"({r['runs_within_target']} of {len(r['scatter_s'])} runs within it).",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=3, help="cluster starts of each kind")
    parser.add_argument("--repeat", type=int, default=30, help="round trips of each kind")
    parser.add_argument("--out", default=str(RESULTS / "notebook.json"))
    args = parser.parse_args(argv)
    data = measure(args.starts, args.repeat)
    data.update(
        starts=args.starts, repeat=args.repeat, date=time.strftime("%Y-%m-%d %H:%M:%S"),
        cores=os.cpu_count(), python=sys.version.split()[0],
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
