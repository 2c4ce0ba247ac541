"""What every rank of ``mpiq run`` runs: the user's script, and one failure report if it fails.

``python -m mpiq_magic.runner SCRIPT ARGS...`` runs ``SCRIPT`` as ``__main__`` (like ``python
SCRIPT``). If it raises, or exits with a non-zero status, the rank writes one report (rank,
role, exception, traceback) into ``$MPIQ_FAILURE_DIR`` and ends the whole job at once
(``MPI_Abort`` when MPI is up, else a non-zero exit, which the process manager turns into
the end of the job): its peers never wait out a timeout for a rank that is gone. The
launcher (:mod:`mpiq_magic.cli`) prints each distinct report once. Without
``$MPIQ_FAILURE_DIR`` (started by hand under ``mpiexec``) the report goes to stderr.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import traceback

#: Exit status of a rank ended by its peers' failure (SIGINT from the process manager).
STOPPED = 130


def _rank() -> int:
    mpi = sys.modules.get("mpi4py.MPI")
    try:
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            return mpi.COMM_WORLD.Get_rank()
    except Exception:
        pass
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return -1


def role(rank: int) -> str:
    """``rank 0`` or ``rank 2 (qrank 1)``, from ``$MPIQ_CLASSICAL``."""
    try:
        classical = int(os.environ.get("MPIQ_CLASSICAL", "1"))
    except ValueError:
        classical = 1
    if rank >= classical:
        return f"rank {rank} (qrank {rank - classical})"
    return f"rank {rank} (classical)"


def report(exc: BaseException | None, code: int) -> dict:
    rank = _rank()
    if exc is None:
        kind, message, tb = "SystemExit", f"the script exited with status {code}", ""
    else:
        kind, message = type(exc).__name__, str(exc)
        tb_obj = exc.__traceback__
        while tb_obj is not None and tb_obj.tb_frame.f_code.co_filename in (__file__, runpy.__file__, "<frozen runpy>"):
            tb_obj = tb_obj.tb_next  # start at the user's script, not at this wrapper
        # the stack only: the launcher prints the exception line itself, once
        tb = "Traceback (most recent call last):\n" + "".join(traceback.format_tb(tb_obj)) if tb_obj else ""
    return {"rank": rank, "who": role(rank), "type": kind, "message": message, "traceback": tb, "code": code}


def _write(rep: dict) -> None:
    directory = os.environ.get("MPIQ_FAILURE_DIR")
    if directory:
        try:
            path = os.path.join(directory, f"rank-{rep['rank']}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(rep, f)
            os.replace(path + ".tmp", path)
            return
        except OSError:
            pass
    sys.stderr.write(f"mpiq: {rep['who']} failed: {rep['type']}: {rep['message']}\n{rep['traceback']}")
    sys.stderr.flush()


def _abort(code: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    mpi = sys.modules.get("mpi4py.MPI")
    try:
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            mpi.COMM_WORLD.Abort(code)
    except Exception:
        pass
    os._exit(code)


def _stopped(signum, frame) -> None:  # the process manager ends this rank: a peer failed
    os._exit(STOPPED)


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: python -m mpiq_magic.runner SCRIPT [ARGS...]\n")
        return 2
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    if os.environ.get("MPIQ_FAILURE_DIR"):
        signal.signal(signal.SIGINT, _stopped)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return 0
        if not isinstance(code, int):  # sys.exit("message"): Python prints it, status 1
            _write({**report(None, 1), "type": "SystemExit", "message": str(code)})
            _abort(1)
        _write(report(None, code))
        _abort(code)
    except BaseException as exc:  # noqa: BLE001 - every failure ends the job, with its cause
        _write(report(exc, 1))
        _abort(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
