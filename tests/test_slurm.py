"""`mpiq slurm` writes a heterogeneous-job script whose devices file binds monitors to the
quantum group's nodes. No SLURM here: tiny `scontrol`/`srun` stand-ins on PATH play the
allocation (this machine as every node), and `srun` runs the job under the bundled mpiexec, so
the generated devices file goes through the real kernel.init binding check."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from mpiq_magic.cli import main
from mpiq_magic.kernel import load_devices
from mpiq_magic.launch import mpiexec_path

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

JOB = """
from mpiq_magic import kernel as mpiq
hc = mpiq.init()
print(f"ROLE {hc.role} {hc.rank if hc.is_classical else hc.qrank} {hc.device.key if hc.is_quantum else ''}", flush=True)
hc.free()
"""


def test_generated_hetjob_binds_monitors_to_the_quantum_nodes(tmp_path):
    script = tmp_path / "job.sh"
    (tmp_path / "run.py").write_text(JOB)
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-c", "1", "-q", "3",
                 "--quantum-nodes", "1", "--num-qubits", "16", "--python", sys.executable, "-o", str(script),
                 str(tmp_path / "run.py")]) == 0
    text = script.read_text()
    assert "#SBATCH hetjob" in text and "--partition=qpu --nodes=1 --ntasks=3" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    host = socket.gethostname()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho {host}\n")
    # srun stand-in: "srun -u -l EXE : EXE" -> one mpiexec with classical + quantum tasks
    (bin_dir / "srun").write_text(
        f"#!/bin/sh\nexec {mpiexec_path()} -n $((MPIQ_CLASSICAL + 3)) {sys.executable} {tmp_path / 'run.py'}\n"
    )
    for tool in ("scontrol", "srun"):
        os.chmod(bin_dir / tool, 0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST_HET_GROUP_1": host}
    proc = subprocess.run(["timeout", "90", "bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    devices = load_devices(tmp_path / "mpiq-devices.42.toml")
    assert [d.key for d in devices] == [(host, 0), (host, 1), (host, 2)]
    assert all(d.num_qubits == 16 for d in devices)
    roles = sorted(re.findall(r"ROLE (\w+ \d+ (?:\('[^']*', \d+\))?)", proc.stdout))  # ranks' lines may interleave
    assert roles == ["classical 0 ", f"quantum 0 ('{host}', 0)", f"quantum 1 ('{host}', 1)", f"quantum 2 ('{host}', 2)"]


def test_bad_hetjob_arguments_are_refused(capsys):
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-q", "2",
                 "--quantum-nodes", "3", "x.py"]) == 2
    assert "quantum_nodes=3 must be between 1 and the number of monitors (2)" in capsys.readouterr().err
    assert main(["slurm", "--classical-partition", "c p u", "--quantum-partition", "qpu", "x.py"]) == 2
    assert "classical_partition" in capsys.readouterr().err
