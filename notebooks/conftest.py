"""The tutorial notebooks as tests: nbval runs every code cell in a real kernel and compares outputs.

Loaded only when pytest collects this folder (``make test``: ``testpaths = ["tests", "notebooks"]``),
so the nbval options below never touch ``tests/``:

* ``--nbval`` (strict): every stored output is compared, except in cells tagged
  ``nbval-ignore-output`` (timings, plots, PIDs, host names) and ``nbval-skip``; the sanitize file
  ``sanitize.cfg`` masks the little that varies inside otherwise stable text. What must hold is
  checked by ``assert`` inside the cells.
* the kernel runs in this environment (``--nbval-current-env``), with the notebook folder as cwd;
* every cell has a timeout (``--nbval-cell-timeout``, default 120 s here);
* after each notebook, any process started from its kernel that outlives the kernel (a cluster
  that was not stopped) is reported as an error and killed, so one broken notebook cannot slow
  the ones after it.

Options given on the command line win (e.g. ``pytest notebooks --nbval-lax``). To refresh the
stored outputs after editing a notebook: ``.venv/bin/python notebooks/execute.py [NAME ...]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 120  # seconds; each notebook as a whole must run in under 2 minutes


def pytest_configure(config):
    opt = config.option
    if not (opt.nbval or opt.nbval_lax):
        opt.nbval = True
    if not opt.nbval_kernel_name:
        opt.nbval_current_env = True
    if opt.nbval_sanitize_with is None:
        opt.nbval_sanitize_with = str(HERE / "sanitize.cfg")
    if opt.nbval_cell_timeout in (None, 2000):  # nbval's default
        opt.nbval_cell_timeout = CELL_TIMEOUT


def _descendants(pid: int):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kernel_pid(notebook) -> int | None:
    kernel = getattr(notebook, "kernel", None)
    km = getattr(kernel, "km", None)
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    return getattr(process, "pid", None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Around the last cell of a notebook (when nbval stops its kernel): no process may survive."""
    notebook = item.parent
    last = nextitem is None or nextitem.parent is not notebook
    pid = _kernel_pid(notebook) if last and item.path.suffix == ".ipynb" else None
    left = _descendants(pid) if pid else []
    result = yield
    if not left:
        return result
    import psutil

    def describe(proc):
        try:
            return f"{proc.pid} ({' '.join(proc.cmdline()[:4])})"
        except psutil.Error:
            return str(proc.pid)

    _, alive = psutil.wait_procs(left, timeout=5)
    names = ", ".join(describe(p) for p in alive)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if alive:
        pytest.fail(f"{item.path.name} left {len(alive)} process(es) running after its kernel stopped: {names}")
    return result
