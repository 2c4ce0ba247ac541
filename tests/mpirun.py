"""Run Python code under the bundled ``mpiexec`` from pytest, bounded by a timeout.

Every test that needs MPI ranks goes through :func:`run_mpi`: it writes the script to a
temporary file, launches ``timeout <T> mpiexec -n N python script``, and returns the
completed process. Per-rank results come back as JSON lines prefixed with ``RESULT``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from mpiq_magic.launch import mpiexec_path

REPO = Path(__file__).resolve().parents[1]


def run_mpi(
    code: str,
    n: int,
    *,
    timeout: float = 120,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    tmp_path: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``code`` on ``n`` MPI processes; raise with both streams if it fails and ``check``."""
    directory = Path(tmp_path) if tmp_path else Path(os.environ.get("TMPDIR", "/tmp"))
    script = directory / f"mpiq_test_{os.getpid()}_{abs(hash(code)) % 10**8}.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [
        shutil.which("timeout") or "timeout",
        "--kill-after=5",
        str(int(timeout)),
        mpiexec_path(),
        "-n",
        str(n),
        sys.executable,
        str(script),
        *(args or []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=str(directory))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mpiexec -n {n} exited with {proc.returncode}.\n--- stdout ---\n{proc.stdout}\n"
            f"--- stderr ---\n{proc.stderr}"
        )
    return proc


def results(proc: subprocess.CompletedProcess) -> list[dict]:
    """Collect the ``RESULT {json}`` lines printed by the ranks."""
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out.append(json.loads(line[len("RESULT "):]))
    return out
