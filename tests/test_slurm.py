"""`mpiq slurm` scripts submitted with `sbatch` to a real single-host SLURM (.ci/slurm-up.sh:
partitions `cpu` (node cpu0) and `qpu` (node qpu0), both this machine). The fixture starts that
SLURM once if it is not up (as root, with Debian's slurm-wlm installed; `.ci/run` installs it) and
leaves it running for the rest of the session; elsewhere the SLURM tests skip with the reason."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpiq_magic.cli import main
from slurm_fixtures import require_test_slurm
from mpiq_magic.kernel import load_devices

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mpi, pytest.mark.slurm, pytest.mark.timeout(240)]

JOB = """
import os
from mpi4py import MPI
from mpiq_magic import kernel as mpiq
hc = mpiq.init()
who = hc.rank if hc.is_classical else hc.qrank
dev = hc.device.key if hc.is_quantum else ''
print(f"ROLE {hc.role} {who} {os.environ.get('SLURMD_NODENAME')} {MPI.COMM_WORLD.Get_size()} {dev}", flush=True)
hc.free()
"""

RELEASE_JOB = r"""
import json, subprocess, time
from mpi4py import MPI
from monitor_engine.attach import attach
from mpiq_magic.ghz.pipeline import run_ghz

att = attach(timeout=120, wait=150)
ghz = att.collective(run_ghz, 8, 2, shots=256)
report = att.release()
out = {"released": report.released_at, "world": MPI.COMM_WORLD.Get_size()}
if ghz is not None:
    out["ghz"] = {k: int(v) for k, v in ghz.counts.items()}
# still running: the qpu node must come free now, not when this job ends
deadline = time.time() + 60
state = ""
while time.time() < deadline:
    state = subprocess.run(["sinfo", "-h", "-p", "qpu", "-o", "%T"], capture_output=True, text=True).stdout.strip()
    if state == "idle":
        break
    time.sleep(0.5)
out["qpu_state"], out["qpu_idle_at"] = state, time.time()
print("CLIENT " + json.dumps(out), flush=True)
time.sleep(2)
"""


@pytest.fixture(scope="session")
def slurm():
    """The environment for sbatch/srun on the test SLURM (starts it once; skips if it cannot run)."""
    env = {**os.environ, "SLURM_CONF": require_test_slurm()}
    # the jobs run this checkout's code with this Python
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env["UCX_LOG_LEVEL"] = "error"
    # two steps of one het job on one host: MPICH's shared-memory bootstrap once collided
    env["MPIR_CVAR_NOLOCAL"] = "1"
    return env


def _sbatch(script: Path, env: dict, cwd: Path) -> str:
    out = subprocess.run(["timeout", "30", "sbatch", "--parsable", "-o", str(cwd / "slurm-%j.out"), str(script)],
                         capture_output=True, text=True, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def _wait(job: str, env: dict, limit: float = 200) -> str:
    """Wait (bounded) until ``job`` left the queue; its final state line from scontrol."""
    deadline = time.time() + limit
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=env)
        if q.returncode == 0 and not q.stdout.strip():
            break
        time.sleep(0.5)
    else:
        subprocess.run(["scancel", job], env=env)
        pytest.fail(f"SLURM job {job} did not finish within {limit:g} s")
    info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, env=env).stdout
    return info


def test_hetjob_is_one_comm_world_with_the_monitors_on_qpu0(tmp_path, slurm):
    script = tmp_path / "job.sh"
    (tmp_path / "run.py").write_text(JOB)
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", "2",
                 "--num-qubits", "16", "--python", sys.executable, "--srun-args=--mpi=pmi2", "--time", "00:05:00",
                 "-o", str(script), str(tmp_path / "run.py")]) == 0
    text = script.read_text()
    assert "#SBATCH hetjob" in text and "--partition=qpu --nodes=1 --ntasks=2" in text
    job = _sbatch(script, slurm, tmp_path)
    info = _wait(job, slurm)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info + output
    host = socket.gethostname()
    devices = load_devices(tmp_path / f"mpiq-devices.{job}.toml")
    assert [d.key for d in devices] == [(host, 0), (host, 1)]  # NodeHostName of qpu0, not its node name
    roles = sorted(re.findall(r"ROLE (.*)", output))
    assert roles == ["classical 0 cpu0 3 ", f"quantum 0 qpu0 3 ('{host}', 0)", f"quantum 1 qpu0 3 ('{host}', 1)"], output


def test_release_hetjob_frees_the_qpu_node_while_the_classical_side_runs(tmp_path, slurm):
    script = tmp_path / "job.sh"
    (tmp_path / "run.py").write_text(RELEASE_JOB)
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", "2",
                 "--num-qubits", "16", "--python", sys.executable, "--srun-args=--mpi=pmi2", "--time", "00:05:00",
                 "--release", "-o", str(script), str(tmp_path / "run.py")]) == 0
    assert "scancel \"$SLURM_JOB_ID+1\"" in script.read_text()
    job = _sbatch(script, slurm, tmp_path)
    info = _wait(job, slurm)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    service = (tmp_path / f"mpiq-service.{job}.txt").read_text()
    (client,) = [json.loads(line[7:]) for line in output.splitlines() if line.startswith("CLIENT ")]
    assert client["world"] == 1  # the classical job's own COMM_WORLD
    assert set(client["ghz"]) == {"0" * 8, "1" * 8} and sum(client["ghz"].values()) == 256
    assert client["qpu_state"] == "idle", output  # seen by the classical job, which still ran
    (report,) = [json.loads(line[8:]) for line in service.splitlines() if line.startswith("SERVICE ")]
    (session,) = report["sessions"]
    assert session["executed"] == 2 and report["stopped"] == "once"
    assert client["qpu_idle_at"] - client["released"] < 30
    assert "ExitCode=0:0" in info, info + output + service


def test_qpu_on_demand_allocates_the_qpu_only_from_attach_to_release(tmp_path, slurm):
    """--qpu-on-demand: a classical-only job whose attach() submits the service as its own job on
    qpu (after the script's start-up), which ends at the release."""
    from mpiq_magic.qpu_accounting import account, read_jobcomp

    script = tmp_path / "job.sh"
    (tmp_path / "run.py").write_text("import time; time.sleep(3)\n" + RELEASE_JOB)  # a start-up without the QPU
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", "2",
                 "--num-qubits", "16", "--python", sys.executable, "--srun-args=--mpi=pmi2", "--time", "00:05:00",
                 "--release", "--qpu-on-demand", "--exclusive-qpu", "-o", str(script), str(tmp_path / "run.py")]) == 0
    assert "#SBATCH hetjob" not in script.read_text()
    job = _sbatch(script, slurm, tmp_path)
    info = _wait(job, slurm)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    service_job = (tmp_path / f"mpiq-port.{job}" / "service-job").read_text().strip()
    service = (tmp_path / f"mpiq-service.{service_job}.txt").read_text()
    assert "ExitCode=0:0" in info, info + output + service
    (client,) = [json.loads(line[7:]) for line in output.splitlines() if line.startswith("CLIENT ")]
    assert set(client["ghz"]) == {"0" * 8, "1" * 8} and sum(client["ghz"].values()) == 256
    assert client["qpu_state"] == "idle", output  # seen by the classical job, which still ran
    assert _wait(service_job, slurm, limit=30)  # gone: it ended at the release
    time.sleep(1.5)  # completion records are written as the jobs leave
    (acc,) = account("on-demand", [("A", job)], read_jobcomp(Path(slurm["SLURM_CONF"]).parent / "jobcomp.txt"),
                     service_jobs={job: [service_job]}).jobs
    cpu, qpu = acc.partition_intervals["cpu"], acc.partition_intervals["qpu"]
    assert qpu.start >= cpu.start + 3  # not allocated during the script's start-up
    assert qpu.end <= client["released"] + 10 and qpu.end <= cpu.end


def test_bad_hetjob_arguments_are_refused(capsys):
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-q", "2",
                 "--quantum-nodes", "3", "x.py"]) == 2
    assert "quantum_nodes=3 must be between 1 and the number of monitors (2)" in capsys.readouterr().err
    assert main(["slurm", "--classical-partition", "c p u", "--quantum-partition", "qpu", "x.py"]) == 2
    assert "classical_partition" in capsys.readouterr().err


SPLIT_JOB = """
import os
from mpiq_magic import kernel as mpiq
from mpiq_magic.slurm import current_step
hc = mpiq.init()
step = current_step()
if hc.is_classical and hc.rank == 0:
    done = step.load([])
    step.save(done + [(step.index, os.environ["SLURM_JOB_ID"], hc.quantum_size)])
    print(f"STEP {step.index} {step.count} {done}", flush=True)  # one write: srun labels each write
hc.free()
"""


def test_split_workflow_runs_its_subjobs_in_order_through_checkpoints(tmp_path, slurm):
    from mpiq_magic.qpu_accounting import account, read_jobcomp

    script = tmp_path / "submit.sh"
    (tmp_path / "run.py").write_text(SPLIT_JOB)
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", "1",
                 "--num-qubits", "8", "--python", sys.executable, "--srun-args=--mpi=pmi2", "--time", "00:05:00",
                 "--split", "2", "--exclusive-qpu", "-o", str(script), str(tmp_path / "run.py")]) == 0
    env = {**slurm, "MPIQ_CHECKPOINT": str(tmp_path / "ckpt")}
    out = subprocess.run(["timeout", "60", "bash", str(script), "-o", str(tmp_path / "slurm-%j.out")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    jobs = out.stdout.split()
    assert len(jobs) == 2
    for job in jobs:
        info = _wait(job, slurm)
        assert "JobState=COMPLETED" in info, info + (tmp_path / f"slurm-{job}.out").read_text()
    assert "Dependency" in subprocess.run(["scontrol", "show", "job", "-o", jobs[1]], capture_output=True,
                                          text=True, env=slurm).stdout
    second = (tmp_path / f"slurm-{jobs[1]}.out").read_text()
    flat = "".join(line[3:] if line.startswith("0: ") else line for line in second.splitlines())  # srun's labels
    assert f"STEP 1 2 [(0, '{jobs[0]}', 1)]" in flat, second  # the first sub-job's checkpoint
    time.sleep(1.5)  # completion records are written as the jobs leave
    acc = account("split", [("A", j) for j in jobs], read_jobcomp(Path(slurm["SLURM_CONF"]).parent / "jobcomp.txt"))
    first, then = acc.jobs
    assert set(first.partition_intervals) == {"cpu", "qpu"}
    assert then.partition_intervals["qpu"].start >= first.partition_intervals["cpu"].end  # afterok: in order
