"""QPU idle time with early release vs holding the quantum partition (seed 003, Fig. 2a vs Fig. 3).

Two hybrid workflows are submitted together to the test SLURM (``.ci/slurm-up.sh``: partitions
``cpu`` and ``qpu``, one QPU node taken exclusively). Each workflow has ``--blocks`` quantum
blocks (a distributed GHZ through the project's pipeline, ``run_ghz``, on the quantum service's
monitors), each followed by ``--classical`` seconds of classical work.

* **monolithic** (the baseline, Fig. 2a): one het job per workflow (``mpiq slurm --release
  --exclusive-qpu``) attaches at the start and releases only at the end, so the QPU component is
  held for the whole workflow and the second workflow waits for the QPU.
* **release** (Fig. 2b/3): ``mpiq slurm --release --split K --exclusive-qpu --qpu-on-demand``: K
  sub-jobs chained with ``--dependency=afterok``, each a classical-only job whose ``attach()``
  submits the quantum service as its own job on ``qpu`` once the classical side has started
  (``--release-layout on-demand``, the default), runs its one block, releases (the service job
  ends), then the classical work and a checkpoint; SLURM interleaves the other workflow's
  sub-jobs into the freed QPU. ``--release-layout het``: each sub-job a heterogeneous job whose
  QPU component is allocated with the classical one and ``scancel``-ed at the release (the
  previous layout: the QPU is held during every sub-job's start-up).

QPU held intervals are SLURM's own (job-completion records of the QPU components); busy intervals
are the quantum blocks as the classical side timed them (plus the monitors' own execution seconds
from the service's ``sessions.jsonl``). Writes ``benchmarks/results/qpu_idle.{json,md,html}``;
ratios are release / monolithic, measured in the same run.

    sudo .ci/slurm-up.sh --install          # once
    flock /work/bench.lock .venv/bin/python benchmarks/qpu_idle.py [--classical 60] [--blocks 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpiq_magic.cli import main as mpiq  # noqa: E402
from mpiq_magic.qpu_accounting import account, read_jobcomp, read_sessions  # noqa: E402
from mpiq_magic.widgets.qpu import gantt_html  # noqa: E402

WORKFLOW = r'''
import json, os, sys, time
from monitor_engine.attach import attach
from mpiq_magic.ghz.pipeline import run_ghz
from mpiq_magic.slurm import current_step

name, blocks, classical = os.environ["QPU_IDLE_NAME"], int(os.environ["QPU_IDLE_BLOCKS"]), float(os.environ["QPU_IDLE_CLASSICAL"])
qubits, shots, reps = int(os.environ["QPU_IDLE_QUBITS"]), int(os.environ["QPU_IDLE_SHOTS"]), int(os.environ["QPU_IDLE_REPS"])
log = os.environ["QPU_IDLE_LOG"]
step = current_step()


def warm_up():
    # the classical side's compile stack, before the QPU is attached (each sub-job is a new process)
    from monitor_engine.payload import compile_for
    from mpiq_magic.ghz.cut import cut_ghz
    from mpiq_magic.kernel.config import default_devices
    (device,) = default_devices(1)
    compile_for(device, cut_ghz(qubits, 2).blocks[0].circuit, shots=shots, job_id="warm-up")


def block(att, index):
    t0 = time.time()
    exact = True
    for _ in range(reps):
        res = att.collective(run_ghz, qubits, att.hc.quantum_size, shots=shots)
        exact &= set(res.counts) <= {"0" * qubits, "1" * qubits} and sum(res.counts.values()) == shots
    t1 = time.time()
    with open(log, "a") as f:
        f.write(json.dumps({"workflow": name, "job": os.environ["SLURM_JOB_ID"], "label": f"block {index}",
                            "start": t0, "end": t1, "exact": exact}) + "\n")


warm_up()
if step.count == 1:  # monolithic: the QPU is held from the first block to the end
    att = attach(timeout=300, wait=600)
    for i in range(blocks):
        block(att, i)
        time.sleep(classical)  # classical work while the QPU idles
    att.release()
else:  # one sub-job per block: attach, run it, release, then classical work and a checkpoint
    done = step.load(0)
    att = attach(timeout=300, wait=600)
    block(att, step.index)
    att.release()
    time.sleep(classical)
    step.save(done + 1)
'''


def _slurm_env() -> dict:
    proc = subprocess.run(["timeout", "120", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"qpu_idle: the test SLURM is not available: {proc.stderr.strip().splitlines()[-1:]}")
    conf = os.environ.get("MPIQ_SLURM_DIR", "/tmp/mpiq-slurm") + "/slurm.conf"
    return {**os.environ, "SLURM_CONF": conf, "PYTHONPATH": str(REPO), "UCX_LOG_LEVEL": "error",
            "MPIR_CVAR_NOLOCAL": "1", "PYTHONUNBUFFERED": "1"}


def _wait(jobs: list[str], env: dict, limit: float) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)], capture_output=True, text=True, env=env)
        if q.returncode == 0 and not q.stdout.strip():
            return
        time.sleep(1.0)
    subprocess.run(["scancel", *jobs], env=env)
    sys.exit(f"qpu_idle: jobs {jobs} did not finish within {limit:g} s; cancelled them.")


def _scenario(kind: str, args, env: dict, work: Path, workflows: list[str]) -> tuple[list[tuple[str, str]], Path]:
    base = ["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", str(args.monitors),
            "--num-qubits", str(args.qubits), "--python", sys.executable, "--srun-args=--mpi=pmi2",
            "--time", "00:30:00", "--release", "--exclusive-qpu"]
    script = work / f"{kind}.sh"
    split = ["--split", str(args.blocks)] if kind == "release" else []
    if kind == "release" and args.release_layout == "on-demand":
        split.append("--qpu-on-demand")
    assert mpiq([*base, *split, "-o", str(script), str(work / "workflow.py")]) == 0
    log = work / f"{kind}-blocks.jsonl"
    jobs: list[tuple[str, str]] = []
    procs = []
    for name in workflows:
        wenv = {**env, "QPU_IDLE_NAME": name, "QPU_IDLE_LOG": str(log), "QPU_IDLE_BLOCKS": str(args.blocks),
                "QPU_IDLE_CLASSICAL": str(args.classical), "QPU_IDLE_QUBITS": str(args.qubits),
                "QPU_IDLE_SHOTS": str(args.shots), "QPU_IDLE_REPS": str(args.reps),
                "MPIQ_CHECKPOINT": str(work / f"checkpoint-{kind}-{name}")}
        out = ["-o", str(work / "slurm-%j.out"), f"--job-name=qpu-idle-{kind}-{name}"]
        cmd = ["bash", str(script), *out] if split else ["sbatch", "--parsable", "--export=ALL", *out, str(script)]
        procs.append((name, subprocess.Popen(["timeout", "60", *cmd], stdout=subprocess.PIPE, text=True, env=wenv,
                                             cwd=work)))
    for name, proc in procs:  # submitted together: co-scheduled
        out, _ = proc.communicate()
        assert proc.returncode == 0, f"submitting {kind} workflow {name} failed"
        jobs += [(name, line.split(";")[0]) for line in out.split()]
    return jobs, log


def run(args) -> dict:
    load_at_start = list(os.getloadavg())
    env = _slurm_env()
    work = Path(args.workdir or f"/tmp/mpiq-qpu-idle-{int(time.time())}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "workflow.py").write_text(WORKFLOW)
    workflows = ["A", "B"]
    per_job = args.blocks * (args.classical + 60)
    results, phases = {}, {}
    for kind in ("monolithic", "release"):
        jobs, log = _scenario(kind, args, env, work, workflows)
        _wait([j for _, j in jobs], env, limit=2 * per_job + 300)
        time.sleep(1.5)  # the completion records are written as the jobs leave
        records = read_jobcomp(os.environ.get("MPIQ_SLURM_DIR", "/tmp/mpiq-slurm") + "/jobcomp.txt")
        blocks = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        sessions = {j: read_sessions(work / f"mpiq-port.{j}") for _, j in jobs}
        service_jobs = {j: (work / f"mpiq-port.{j}" / "service-job").read_text().split()
                        for _, j in jobs if (work / f"mpiq-port.{j}" / "service-job").exists()}
        acc = account(kind, jobs, records, blocks, sessions, service_jobs=service_jobs)
        results[kind] = (acc, blocks)
        phases[kind] = _phases(work, records, jobs, service_jobs)
        print(f"qpu_idle: {kind}: makespan {acc.makespan:.1f} s, QPU held {acc.qpu_held:.1f} s, busy "
              f"{acc.qpu_busy:.1f} s, idle {acc.qpu_idle:.1f} s", flush=True)
    mono, rel = results["monolithic"][0], results["release"][0]
    exact = all(b["exact"] for _, bl in results.values() for b in bl)
    n_blocks = {k: len(bl) for k, (_, bl) in results.items()}
    ratios = {
        "qpu_idle": rel.qpu_idle / mono.qpu_idle if mono.qpu_idle else None,
        "makespan": rel.makespan / mono.makespan,
        "qpu_held": rel.qpu_held / mono.qpu_held,
        "qpu_busy": rel.qpu_busy / mono.qpu_busy if mono.qpu_busy else None,
        "qpu_attached_idle": (rel.to_dict()["qpu_attached_idle_s"] / mono.to_dict()["qpu_attached_idle_s"]
                              if mono.to_dict()["qpu_attached_idle_s"] else None),
        "monitor_busy": (sum(j.monitor_busy_seconds for j in rel.jobs) / sum(j.monitor_busy_seconds for j in mono.jobs)
                         if sum(j.monitor_busy_seconds for j in mono.jobs) else None),
    }
    targets = {
        "qpu_idle <= 0.10 x monolithic": ratios["qpu_idle"] is not None and ratios["qpu_idle"] <= 0.10,
        "makespan <= 0.75 x monolithic": ratios["makespan"] <= 0.75,
        "same quantum work (blocks, all exact)": exact and n_blocks["monolithic"] == n_blocks["release"] == 2 * args.blocks,
    }
    data = {
        "benchmark": "qpu_idle",
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "parameters": {"workflows": 2, "blocks": args.blocks, "classical_s": args.classical, "monitors": args.monitors,
                       "ghz_qubits": args.qubits, "shots": args.shots, "ghz_per_block": args.reps,
                       "release_layout": args.release_layout},
        "load_at_start": load_at_start, "load_at_end": list(os.getloadavg()),
        "monolithic": mono.to_dict(), "release": rel.to_dict(),
        "ratios_release_over_monolithic": ratios, "targets_met": targets, "blocks_exact": exact,
        "qpu_allocation_phases_s": phases,
        "workdir": str(work),
    }
    return data, mono, rel


PHASES = (
    ("allocated -> service process created", "SLURM step launch"),
    ("process created -> service ready", "Python, MPI init, imports (qiskit-aer), devices"),
    ("ready -> client attached", "rendezvous, Accept/Connect, hybrid communicator"),
    ("attached -> released", "the session: quantum blocks and their dispatch"),
    ("released -> service report", "disconnect, session record"),
    ("service report -> allocation end", "process exit, step and job end (1 s records)"),
)


def _phases(work: Path, records: dict, jobs: list[tuple[str, str]], service_jobs: dict) -> dict:
    """Where each QPU allocation's seconds went, summed over the scenario's QPU allocations:
    SLURM's start/end (1 s resolution) and the service's own report (process creation, ready,
    the session, its end)."""
    from mpiq_magic.qpu_accounting import _stamp

    pairs = []
    for _, job in jobs:
        if job in service_jobs:  # the QPU on demand: the service is its own job
            pairs += [(sj, records.get(sj)) for sj in service_jobs[job]]
        else:  # a het job: its QPU component
            pairs += [(job, next((r for r in records.values() if r.get("HetJobId") == job and r["Partition"] == "qpu"),
                                 None))]
    sums = {name: 0.0 for name, _ in PHASES}
    count = 0
    for file_id, rec in pairs:
        path = work / f"mpiq-service.{file_id}.txt"
        reports = [json.loads(line[8:]) for line in path.read_text().splitlines()
                   if line.startswith("SERVICE ")] if path.exists() else []
        if rec is None or not reports or not reports[0]["sessions"]:
            continue
        rep, a0, a1 = reports[0], _stamp(rec["StartTime"]), _stamp(rec["EndTime"])
        ses = rep["sessions"][0]
        launched = rep.get("launched") or rep["started"]
        marks = [a0, launched, rep["started"], ses["attached"], ses["released"], rep["ended"], a1]
        for (name, _), lo, hi in zip(PHASES, marks, marks[1:]):
            sums[name] += hi - lo
        count += 1
    return {"allocations": count, **{k: round(v, 2) for k, v in sums.items()}}


def _load(data: dict) -> str:
    start, end = data.get("load_at_start"), data.get("load_at_end")
    if start and end:
        return f"{start[0]:.1f} / {start[1]:.1f} / {start[2]:.1f} at start, {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f} at end"
    return f"{data['machine']['load'][0]:.1f}"


def _markdown(data: dict) -> str:
    p, m, r, q = data["parameters"], data["monolithic"], data["release"], data["ratios_release_over_monolithic"]
    lines = [
        "# QPU idle time: early release vs holding the quantum partition (seed 003)", "",
        f"Two co-scheduled workflows on the test SLURM (one exclusive `qpu` node), {p['blocks']} quantum blocks each "
        f"({p['ghz_per_block']} x GHZ-{p['ghz_qubits']} over {p['monitors']} monitors, {p['shots']} shots), "
        f"{p['classical_s']:g} s of classical work after each block; release layout: {p.get('release_layout', 'het')}. "
        "Held = SLURM's allocation of the QPU components "
        "(job-completion records, 1 s resolution); busy = the blocks as timed by the classical side. "
        f"Machine: {data['machine']['cpus']} CPUs, load average {_load(data)}.", "",
        "| scenario | makespan s | QPU held s | QPU busy s | QPU idle s | QPU attached s | attached idle s | monitors' execute s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in (("monolithic (baseline)", m), ("release (split, afterok)", r)):
        lines.append(f"| {name} | {d['makespan_s']:.1f} | {d['qpu_held_s']:.1f} | {d['qpu_busy_s']:.1f} | "
                     f"{d['qpu_idle_s']:.1f} | {d['qpu_attached_s']:.1f} | {d['qpu_attached_idle_s']:.1f} | "
                     f"{d['monitor_busy_s']:.2f} |")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines += ["", "| ratio release / monolithic | value | target | met |", "|---|---:|---:|---|",
              f"| QPU idle | {fmt(q['qpu_idle'])} | <= 0.10 | {data['targets_met']['qpu_idle <= 0.10 x monolithic']} |",
              f"| makespan | {fmt(q['makespan'])} | <= 0.75 | {data['targets_met']['makespan <= 0.75 x monolithic']} |",
              f"| QPU held | {fmt(q['qpu_held'])} | | |",
              f"| QPU attached idle (sessions: attach -> release, minus busy) | {fmt(q.get('qpu_attached_idle'))} | | |",
              f"| QPU busy (blocks, as timed) | {fmt(q['qpu_busy'])} | 1 | {q['qpu_busy'] is not None and abs(q['qpu_busy'] - 1) <= 0.1} |",
              f"| same quantum work (blocks run, all exact) | | equal | {data['targets_met']['same quantum work (blocks, all exact)']} |",
              f"| monitors' execute seconds | {fmt(q['monitor_busy'])} | 1 | |", "",
              *_phase_table(data),
              f"GHZ blocks reconstructed exactly: {data['blocks_exact']}. Gantt views: `qpu_idle.html`. "
              "Targets are judged on SLURM's allocation (held); the attached columns are the service's own "
              "sessions. Analysis: docs/hpc.md.", ""]
    return "\n".join(lines)


def _phase_table(data: dict) -> list[str]:
    phases = data.get("qpu_allocation_phases_s")
    if not phases:
        return []
    m, r = phases["monolithic"], phases["release"]
    lines = [f"Where the QPU allocations' seconds went (sums over {m['allocations']} monolithic and "
             f"{r['allocations']} release allocations; SLURM's ends have 1 s resolution):", "",
             "| phase | what | monolithic s | release s |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {what} | {m[name]:.1f} | {r[name]:.1f} |" for name, what in PHASES]
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=3, help="quantum blocks per workflow (default 3)")
    parser.add_argument("--classical", type=float, default=60.0, help="classical seconds after each block (default 60)")
    parser.add_argument("--monitors", type=int, default=2)
    parser.add_argument("--qubits", type=int, default=12)
    parser.add_argument("--shots", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=2, help="GHZ runs per quantum block (default 2)")
    parser.add_argument("--release-layout", choices=["on-demand", "het"], default="on-demand",
                        help="release scenario: the service as its own job submitted by attach() (default), or "
                             "the QPU component of each het sub-job")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "qpu_idle"))
    parser.add_argument("--markdown-only", action="store_true", help="re-render the markdown from --out's JSON")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.markdown_only:
        data = json.loads(out.with_suffix(".json").read_text())
        m, r = data["monolithic"], data["release"]
        q = data["ratios_release_over_monolithic"]
        q["qpu_attached_idle"] = r["qpu_attached_idle_s"] / m["qpu_attached_idle_s"] if m["qpu_attached_idle_s"] else None
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        out.with_suffix(".md").write_text(_markdown(data))
        return 0
    data, mono, rel = run(args)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(_markdown(data))
    page = ("<!doctype html><meta charset='utf-8'><title>QPU idle</title>\n"
            + gantt_html(mono) + "\n" + gantt_html(rel) + "\n")
    out.with_suffix(".html").write_text(page)
    print(_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
