"""Execute the tutorial notebooks in place (a real kernel, outputs stored) and report timings.

    .venv/bin/python notebooks/execute.py                 # every notebook in this folder
    .venv/bin/python notebooks/execute.py 04 06            # those whose name starts with 04 / 06

Widgets are rendered in their static fallback (plotly figures + text), as nbval sees them. Each
notebook must finish within ``--timeout`` seconds (default 120). Run ``make test`` (nbval) after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def execute(path: Path, timeout: float) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per cell (default 120)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPIQ_WIDGETS", "static")  # what nbval's kernels show, too
    paths = sorted(HERE.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in args.names)]
    total = 0.0
    for path in paths:
        seconds = execute(path, args.timeout)
        total += seconds
        print(f"{path.name:40s} {seconds:6.1f} s", flush=True)
    print(f"{'total':40s} {total:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
