"""Start quantum monitors under MPI: ``mpiexec -n N python -m monitor_engine [options]``.

Every process calls ``mpiq.init(devices, classical=C)``. Quantum processes serve requests
(:meth:`MonitorProcess.serve`) until a classical rank shuts them down. Classical ranks either
run ``--run SCRIPT`` (its globals get ``hc`` and ``client``, a :class:`MonitorClient`; the
script must not call ``init`` again) or, without it, perform a health check: classical rank 0
prints every monitor's status as one ``MONITORS [...]`` JSON line. Either way classical rank 0
shuts the monitors down at the end, so the job exits by itself.

Examples::

    mpiexec -n 4 python -m monitor_engine --devices devices.toml --classical 1
    mpiexec -n 4 python -m monitor_engine --classical 1 --run my_batch.py -- --shots 2000
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitor_engine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--devices", help="devices TOML file (default: $MPIQ_DEVICES or Q local devices)")
    parser.add_argument("--classical", type=int, default=None, help="classical ranks (default: $MPIQ_CLASSICAL or 1)")
    parser.add_argument("--run", metavar="SCRIPT", help="script the classical ranks run against the monitors")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="a monitor stops after this many seconds without a request (default: never)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="default timeout of blocking calls in seconds (default: $MPIQ_TIMEOUT or 120)")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for SCRIPT (after --)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mpiq_magic import kernel as mpiq

    from .job import run_job

    hc = mpiq.init(devices=args.devices, classical=args.classical, timeout=args.timeout)
    script_args = list(args.script_args)
    if script_args[:1] == ["--"]:
        script_args = script_args[1:]

    def run_script(hc, client):
        sys.argv = [args.run, *script_args]
        return runpy.run_path(args.run, init_globals={"hc": hc, "client": client}, run_name="__main__")

    try:
        value = run_job(hc, run_script if args.run else None, idle_timeout=args.idle_timeout,
                        timeout=args.timeout)
        if hc.is_classical and hc.rank == 0 and not args.run:
            print("MONITORS " + json.dumps(value, default=str), flush=True)
    finally:
        hc.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
