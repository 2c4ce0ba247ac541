"""Session fixtures for the notebook layer: one hybrid cluster, one real Jupyter kernel.

Starting MPI engines is the expensive part (seconds on 2 cores), so each is started once per
test session and shared. Every process they start is stopped at teardown (by the cluster's
own ``stop``, which only kills PIDs it started).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SHAPE = (1, 3)  # classical ranks, quantum monitors: what the tests use

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="session")
def hybrid_cluster():
    """A running HybridCluster (1 classical + 3 quantum), warmed up, shared by the session."""
    from mpiq_magic.cluster import HybridCluster

    cluster = HybridCluster(*CLUSTER_SHAPE, timeout=60, start_timeout=120)
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


class KernelSession:
    """A real IPython kernel driven through nbclient, one cell at a time."""

    def __init__(self, timeout: float = 180):
        import nbformat
        from nbclient import NotebookClient

        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.nb, timeout=timeout, kernel_name="python3", allow_errors=True,
            resources={"metadata": {"path": str(REPO)}},
        )
        self._ctx = None

    def __enter__(self) -> "KernelSession":
        self._ctx = self.client.setup_kernel()
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.run("from mpiq_magic.magics import shutdown_active_cluster\nshutdown_active_cluster()")
        finally:
            self._ctx.__exit__(None, None, None)

    def run(self, source: str) -> "CellResult":
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return CellResult(cell.outputs)


class CellResult:
    """Outputs of one executed cell, as text."""

    def __init__(self, outputs: list):
        self.outputs = outputs

    @property
    def error(self) -> dict | None:
        return next((o for o in self.outputs if o.get("output_type") == "error"), None)

    @property
    def error_text(self) -> str:
        err = self.error
        if err is None:
            return ""
        return _ANSI.sub("", "\n".join([f"{err['ename']}: {err['evalue']}", *err.get("traceback", [])]))

    @property
    def text(self) -> str:
        parts = []
        for o in self.outputs:
            if o.get("output_type") == "stream":
                parts.append(o["text"])
            elif o.get("output_type") in ("execute_result", "display_data"):
                parts.append(o.get("data", {}).get("text/plain", ""))
        return _ANSI.sub("", "".join(p if p.endswith("\n") else p + "\n" for p in parts))


@pytest.fixture(scope="session")
def kernel_session():
    """A real Jupyter kernel with ``%load_ext mpiq_magic`` done (no cluster started)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with KernelSession() as session:
        result = session.run("%load_ext mpiq_magic")
        assert result.error is None, result.error_text
        yield session
