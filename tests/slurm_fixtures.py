"""The test SLURM (.ci/slurm-up.sh: partitions ``cpu`` and ``qpu`` on this machine) for the tests
that submit to it: started once if it is not up, a skip with the reason where it cannot run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def require_test_slurm() -> str:
    """The path of the test SLURM's slurm.conf once it is up; skips where SLURM is not installed
    or cannot run here (slurm-up.sh exits 3 and says why), fails if it should run but does not."""
    if subprocess.run(["which", "sbatch"], capture_output=True).returncode != 0:
        pytest.skip("SLURM is not installed here (Debian: apt-get install slurm-wlm munge, or run .ci/run as root).")
    proc = subprocess.run(["timeout", "90", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True, text=True)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"the test SLURM did not come up:\n{proc.stderr}"
    return os.environ.get("MPIQ_SLURM_DIR", "/tmp/mpiq-slurm") + "/slurm.conf"
