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


#: Environment that keeps a single-host job's MPI traffic on loopback: the ``mpich`` wheel's
#: ch4 netmods (UCX by default, OFI on request) would otherwise listen on every interface.
LOOPBACK_ENV = {
    "UCX_NET_DEVICES": "lo",
    "FI_TCP_IFACE": "lo",
    "FI_SOCKETS_IFACE": "lo",
    "MPIR_CVAR_NEMESIS_TCP_NETWORK_IFACE": "lo",
}


def loopback_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> dict[str, str]:
    """:data:`LOOPBACK_ENV` less what the user already set (a user setting wins)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in LOOPBACK_ENV.items() if k not in environ}


def local_mpiexec(*, survive_rank_death: bool = False) -> tuple[str, list[str]]:
    """The process manager for a single-host job and its options.

    The ``mpich`` wheel's hydra ``mpiexec`` always listens on 0.0.0.0 for its proxies; on one
    host its ``gforker`` sibling needs no listening socket at all (PMI runs over inherited
    descriptors), so it is used when present. gforker ends the job when a process exits with
    a non-zero status — what ``mpiq run`` wants; a cluster that must survive a dead monitor
    (``survive_rank_death``) runs its engines behind a shell that exits 0 (see
    :mod:`mpiq_magic.cluster.processes`). ``$MPIQ_MPIEXEC=hydra`` forces hydra.
    """
    hydra = mpiexec_path()
    forker = Path(hydra).with_name("mpiexec.gforker")
    if os.environ.get("MPIQ_MPIEXEC", "").lower() != "hydra" and forker.exists():
        return str(forker), []
    return hydra, (["-disable-auto-cleanup"] if survive_rank_death else [])


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
    env.update(loopback_env())
    mpiexec, args = local_mpiexec()
    cmd = [mpiexec, *args, "-n", str(classical + quantum), *argv]
    return cmd, env
