"""Run Python code under the bundled ``mpiexec`` from pytest, bounded by a timeout.

Every test that needs MPI ranks goes through :func:`run_mpi`: it writes the script to a
temporary file, launches ``timeout <T> mpiexec -n N python script``, and returns the
completed process. Ranks report results with ``emit(obj)`` (predefined in every script: it
writes JSON to a per-rank file, so output of several ranks never interleaves); :func:`results`
reads them back (and, for short outputs, also accepts ``RESULT {json}`` lines on stdout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    results_dir = tempfile.mkdtemp(prefix="mpiq_results_", dir=directory)
    script.write_text(_PREAMBLE + textwrap.dedent(code))
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPIQ_TEST_RESULTS": results_dir, **(env or {})}
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
    proc.results_dir = results_dir
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mpiexec -n {n} exited with {proc.returncode}.\n--- stdout ---\n{proc.stdout}\n"
            f"--- stderr ---\n{proc.stderr}"
        )
    return proc


_PREAMBLE = """\
def emit(obj):
    import json as _json, os as _os
    from mpi4py import MPI as _MPI
    _path = _os.path.join(_os.environ["MPIQ_TEST_RESULTS"], "%06d.json" % _MPI.COMM_WORLD.Get_rank())
    with open(_path, "a") as _f:
        _f.write(_json.dumps(obj) + "\\n")
"""


def results(proc: subprocess.CompletedProcess) -> list[dict]:
    """Per-rank results: everything ranks passed to ``emit``, in rank order, then ``RESULT`` lines."""
    out = []
    directory = getattr(proc, "results_dir", None)
    if directory:
        for path in sorted(Path(directory).glob("*.json")):
            out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    # ranks share one stdout, so two ranks' lines can run together ("RESULT {...}RESULT {...}"):
    # decode each object from its marker rather than by line
    decoder, text, marker = json.JSONDecoder(), proc.stdout, "RESULT "
    start = text.find(marker)
    while start != -1:
        obj, end = decoder.raw_decode(text, start + len(marker))
        out.append(obj)
        start = text.find(marker, end)
    return out
