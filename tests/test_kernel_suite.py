"""One test body (tests/data/kernel_suite.py) under the bundled mpiexec at 1, 2, 4, 5 and 9
processes, as mpi4py runs its own tests: every object of mpi4py's message set through every
primitive, posted receives that progress while the process sends, waitany/waitall, tags that
collide with nothing, timeouts that name the missing process. One mpiexec job per count."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpirun import results, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

SUITE = (Path(__file__).parent / "data" / "kernel_suite.py").read_text()


@pytest.mark.parametrize(
    "n, pattern",
    # default: trees, flat scatter/gather where the node has more processes than cores
    [(1, ""), (2, ""), (4, ""), (5, ""), (9, ""), (5, "tree"), (9, "tree"), (4, "flat")],
)
def test_kernel_suite(n, pattern, tmp_path):
    env = {"MPIQ_COLLECTIVES": pattern} if pattern else None
    res = results(run_mpi(SUITE, n, timeout=240, tmp_path=tmp_path, env=env))
    assert sorted(r["me"] for r in res) == list(range(n))
    failures = [f"[process {r['me']}] {f}" for r in res for f in r["failures"]]
    assert not failures, "\n".join(failures)
    assert all(len(r["checks"]) >= 20 for r in res)
