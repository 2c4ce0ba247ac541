"""mpiq_magic: MPI-Q (classical-quantum message passing) for Jupyter and mpiexec.

``%load_ext mpiq_magic`` registers the ``%mpiq`` / ``%%mpiq`` magics; the MPI-Q core lives in
:mod:`mpiq_magic.kernel` and works without IPython.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # pragma: no cover - exercised through IPython
    """Register the magics; imports are lazy so ``import mpiq_magic`` stays cheap."""
    from .magics import MPIQMagics

    ipython.register_magics(MPIQMagics)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .magics import shutdown_active_cluster

    shutdown_active_cluster()
