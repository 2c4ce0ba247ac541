"""``mpiq ghz`` / ``mpiq demo``: argument errors before any process starts, and end-to-end runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpiq_magic import cli
from mpiq_magic.ghz import cli as ghz_cli

MPIQ = [sys.executable, "-m", "mpiq_magic.cli"]


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything tries to start a process."""

    def boom(*args, **kwargs):
        raise AssertionError(f"a process was started for a bad argument: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", boom)  # the launcher and the watchdog use it
    monkeypatch.setattr(subprocess, "run", boom)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--qubits", "0", "--nodes", "2"], "--qubits must be at least 1, got 0"),
        (["--qubits", "-5", "--nodes", "2"], "--qubits must be at least 1, got -5"),
        (["--qubits", "10", "--nodes", "0"], "--nodes must be at least 1"),
        (["--qubits", "10", "--nodes", "4", "--blocks", "2"], "--nodes 4 starts more monitors than the 2 block(s) need"),
        (["--qubits", "3", "--nodes", "2", "--blocks", "5"], "Cannot cut 3 qubit(s) into 5 blocks"),
        (["--qubits", "300", "--nodes", "2"], "Blocks of 150 qubits (300 qubits in 2 blocks) are wider than device 127.0.0.1:0 (128 qubits); use --blocks 3 or more"),
        (["--qubits", "10", "--nodes", "2", "--method", "tensor"], "--method 'tensor' is unknown; choose one of automatic, statevector, matrix_product_state, stabilizer"),
        (["--qubits", "80", "--nodes", "2", "--method", "statevector"], "A 40-qubit statevector needs"),
        (["--qubits", "10", "--nodes", "2", "--noise", "depolarizing=2"], "a probability must lie in [0, 1]"),
        (["--qubits", "10", "--nodes", "2", "--noise", "bitflip=0.1"], "is not KEY=PROBABILITY"),
        (["--qubits", "10", "--nodes", "2", "--shots", "0"], "--shots must be at least 1"),
    ],
)
def test_bad_arguments_fail_before_launch(no_launch, capsys, argv, message):
    assert cli.main(["ghz", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpiq: error: ") and message in err


@pytest.mark.timeout(30)
def test_bad_demo_argument(no_launch, capsys):
    assert cli.main(["demo", "--nodes", "7", "--blocks", "6"]) == 2
    assert "--nodes 7 starts more monitors than the 6 block(s) need" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_devices_file_width_is_checked(no_launch, capsys, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text('[[devices]]\nhost = "127.0.0.1"\ndevice_id = 0\nnum_qubits = 8\n'
                       '[[devices]]\nhost = "127.0.0.1"\ndevice_id = 1\nnum_qubits = 16\n')
    assert cli.main(["ghz", "--qubits", "20", "--nodes", "2", "--devices", str(devices)]) == 2
    assert "wider than device 127.0.0.1:0 (8 qubits); use --blocks 3 or more" in capsys.readouterr().err


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_ghz_json_end_to_end(tmp_path):
    out = tmp_path / "ghz.json"
    proc = subprocess.run(
        [*MPIQ, "ghz", "--qubits", "30", "--nodes", "2", "--blocks", "5", "--shots", "500",
         "--noise", "depolarizing_2q=0.02", "--json", str(out), "--timeout", "100"],
        capture_output=True, text=True, timeout=110, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    for key in ("qubits", "nodes", "blocks", "shots", "method", "p_all_zero", "p_all_one", "counts", "timings"):
        assert key in data
    assert (data["qubits"], data["nodes"], data["blocks"], data["shots"]) == (30, 2, 5, 500)
    assert data["method"] == "stabilizer"
    assert sum(data["counts"].values()) <= 500 and all(len(k) == 30 for k in data["counts"])
    assert 0.5 < data["p_all_zero"] + data["p_all_one"] < 1.0  # noisy CNOTs leave their mark
    assert set(data["timings"]) >= {"cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct", "total"}
    assert "P(0...0)" in proc.stdout and "timings (s)" in proc.stdout


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_demo_writes_report(tmp_path):
    proc = subprocess.run(
        [*MPIQ, "demo", "--barriers", "5", "--timeout", "100"],
        capture_output=True, text=True, timeout=110, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for heading in ("== topology ==", "== barrier ==", "== reconstruction =="):
        assert heading in proc.stdout
    assert "qrank 2" in proc.stdout and "release skew" in proc.stdout
    report = Path(tmp_path, "mpiq-report.html").read_text()
    # plotly.js is embedded (no <script src=...> to a CDN), so the report opens offline.
    assert "Plotly.newPlot" in report and '<script src="http' not in report and len(report) > 2_000_000
    assert report.count("plotly-graph-div") >= 3
