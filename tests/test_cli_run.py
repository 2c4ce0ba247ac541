"""`mpiq run` launches a script under the bundled mpiexec with C classical + Q quantum processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MPIQ = [sys.executable, "-m", "mpiq_magic.cli"]

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]


def test_run_hello_example_with_devices_file(tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text(
        "[[devices]]\nhost='127.0.0.1'\ndevice_id=4\nnum_qubits=8\n"
        "[[devices]]\nhost='127.0.0.1'\ndevice_id=9\nnum_qubits=8\n"
    )
    proc = subprocess.run(
        ["timeout", "120", *MPIQ, "run", "-c", "1", "-q", "2", "--devices", str(devices),
         str(REPO / "docs/examples/hello_mpiq.py")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "qrank 0 on 127.0.0.1:4" in proc.stdout and "qrank 1 on 127.0.0.1:9" in proc.stdout
    assert "1 classical, 2 quantum" in proc.stdout


def test_run_rejects_missing_script_and_bad_counts(tmp_path):
    proc = subprocess.run([*MPIQ, "run", "-q", "2", str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.py' does not exist" in proc.stderr
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    proc = subprocess.run([*MPIQ, "run", "-c", "0", "-q", "2", str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and "classical=0" in proc.stderr
    proc = subprocess.run([*MPIQ, "run", "--devices", str(tmp_path / "d.toml"), str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and "d.toml' does not exist" in proc.stderr


def test_angle_sweep_example_is_a_workload_on_the_dispatch_path():
    """docs/architecture.md's example: 7 bound circuits dealt over 3 monitors, P(1) = sin^2(theta/2)."""
    proc = subprocess.run(
        ["timeout", "120", *MPIQ, "run", "-c", "1", "-q", "3", str(REPO / "docs/examples/angle_sweep.py")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # the ranks share one stdout: read rank 0's rows wherever they are, not line by line
    rows = [m.groupdict() for m in re.finditer(
        r"theta=(?P<theta>[\d.]+) P\(1\)=(?P<P1>[\d.]+) expected=(?P<expected>[\d.]+) qrank=(?P<qrank>\d+)", proc.stdout)]
    assert len(rows) == 7, proc.stdout + proc.stderr
    assert [int(r["qrank"]) for r in rows] == [0, 1, 2, 0, 1, 2, 0], rows  # least-loaded placement
    assert all(abs(float(r["P1"]) - float(r["expected"])) < 0.08 for r in rows), rows
