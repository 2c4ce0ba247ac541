"""Launching MPI-Q jobs under the bundled ``mpiexec`` (the ``mpich`` wheel)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .kernel.errors import ConfigError


def mpiexec_path() -> str:
    """The ``mpiexec`` installed next to this Python (mpich wheel), else the one on PATH."""
    candidate = Path(sys.executable).parent / "mpiexec"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(
            "No mpiexec found next to the Python interpreter or on PATH; install the 'mpich' "
            "wheel (pip install mpich) or a system MPI."
        )
    return found


def mpiq_command(
    argv: Sequence[str], *, classical: int, quantum: int, devices: str | os.PathLike[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The ``mpiexec`` command line and environment that run ``argv`` with C + Q processes.

    The split is passed to :func:`mpiq_magic.kernel.init` through ``MPIQ_CLASSICAL`` and
    ``MPIQ_DEVICES``, so an unmodified script calling ``init()`` picks it up.
    """
    if classical < 1:
        raise ConfigError(f"At least one classical rank is needed, got classical={classical}.")
    if quantum < 0:
        raise ConfigError(f"The number of quantum processes must be >= 0, got quantum={quantum}.")
    env = {"MPIQ_CLASSICAL": str(classical)}
    if devices is not None:
        path = Path(devices).resolve()
        if not path.exists():
            raise ConfigError(f"Devices file '{devices}' does not exist.")
        env["MPIQ_DEVICES"] = str(path)
    cmd = [mpiexec_path(), "-n", str(classical + quantum), *argv]
    return cmd, env
