"""``%mpiq start --slurm``: the notebook's cluster with its controller in the kernel and its engines
as a job on the test SLURM (.ci/slurm-up.sh: partitions ``cpu`` and ``qpu``, both this machine),
started through ipyparallel's SLURM launcher, in a real Jupyter kernel. The same magics work
afterwards; stopping the cluster leaves no SLURM job behind."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from slurm_fixtures import require_test_slurm
from tests.cluster_fixtures import KernelSession

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mpi, pytest.mark.slurm, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def slurm_kernel():
    """A real kernel whose sbatch/squeue/scancel talk to the test SLURM (started if it is not up)."""
    conf = require_test_slurm()
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH", "UCX_LOG_LEVEL")}
    os.environ["SLURM_CONF"] = conf
    # the engines run in the job with the kernel's environment (--export=ALL): this checkout's code
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    os.environ["UCX_LOG_LEVEL"] = "error"
    try:
        with KernelSession(timeout=240) as session:
            result = session.run("%load_ext mpiq_magic")
            assert result.error is None, result.error_text
            yield session
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _queued(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %P %N"], capture_output=True, text=True,
                          env={**os.environ}).stdout.strip()


def test_start_slurm_scatter_stop_leaves_no_job(slurm_kernel):
    s = slurm_kernel
    started = s.run("%mpiq start -c 1 -q 2 --slurm cpu --qpu-partition qpu --slurm-time 10 --timeout 90")
    assert started.error is None, started.error_text
    match = re.search(r"Started 1 classical \+ 2 quantum engines \(engine id == MPI rank\) in [\d.]+ s as SLURM job (\d+)",
                      started.text)
    assert match, started.text
    job = match.group(1)
    # a heterogeneous job: one component on cpu (the classical engine), one on qpu (the monitors)
    components = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %P %T"], capture_output=True, text=True).stdout
    assert re.search(rf"^{job}\+0 cpu RUNNING$", components, re.M) and re.search(rf"^{job}\+1 qpu RUNNING$",
                                                                                components, re.M), components
    # the engines are ranks of the SLURM job: SLURM's own variables on every engine
    where = s.run("%%mpiq run\nimport os\nprint('JOB', os.environ.get('SLURM_JOB_ID'), os.environ.get('SLURMD_NODENAME'), hc.role)")
    assert where.error is None, where.error_text
    assert len(re.findall(rf"JOB {job} cpu0 classical", where.text)) == 1, where.text
    assert len(re.findall(rf"JOB {job} qpu0 quantum", where.text)) == 2, where.text
    scattered = s.run(
        "%%mpiq scatter --shots 100 --out res\n"
        "from qiskit import QuantumCircuit\n"
        "qc = QuantumCircuit(3); qc.h(0); qc.cx(0, 1); qc.cx(1, 2); qc.measure_all()\n"
        "circuits = [qc] * 4"
    )
    assert scattered.error is None, scattered.error_text
    assert "4 circuit(s) ran on 2 monitor(s)" in scattered.text, scattered.text
    check = s.run("assert [sorted(r.counts) for r in res] == [['000', '111']] * 4, res\n"
                  "assert [r.qrank for r in res] == [0, 1, 0, 1]")
    assert check.error is None, check.error_text
    stopped = s.run("%mpiq stop")
    assert stopped.error is None, stopped.error_text
    assert _queued(job) == "", f"SLURM job {job} is still there after %mpiq stop: {_queued(job)}"
