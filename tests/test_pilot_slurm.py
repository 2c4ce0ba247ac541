"""A pilot whose engines run in a SLURM placeholder job (the test SLURM of .ci/slurm-up.sh).

Skips, with the reason, where SLURM is not installed or cannot run.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pilot_fixtures import TESTS, alive
from slurm_fixtures import require_test_slurm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slurm_env():
    conf = require_test_slurm()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # sbatch/scancel run by ipyparallel's launcher read it
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def where(hc):
    return {"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"), "rank": hc.rank}


def test_slurm_pilot_runs_tasks_in_its_placeholder_job(slurm_env):
    from qiskit import QuantumCircuit

    from mpiq_magic.pilot import PilotDescription, PilotManager

    env = {"PYTHONPATH": os.pathsep.join([TESTS, str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with PilotManager() as pm:
        p = pm.create_pilot(PilotDescription(
            "hpc", kind="slurm", classical=1, quantum=2, timeout=60, start_timeout=120, env=env,
            slurm={"partition": "cpu", "time": "10"},
        ))
        job = p.cluster.job_id
        assert job
        got = pm.submit_task(where).result(timeout=120)
        assert got["job"] == str(job) and got["pid"] == p.engine_pids[0]
        qc = QuantumCircuit(2)
        qc.x([0, 1])
        qc.measure_all()
        assert pm.submit_task(qc, shots=20).result(timeout=120).data.meas.get_counts() == {"11": 20}
        pids = p.pids()
    deadline = time.time() + 30
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", str(job)], capture_output=True, text=True).stdout.strip()
        if not queued and not any(alive(x) for x in pids):
            break
        time.sleep(0.5)
    assert not queued, f"SLURM job {job} is still there: {queued}"
    assert not [x for x in pids if alive(x)]
