"""``mpiq qaoa GRAPH.json``: noise-aware distributed QAOA headless, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..kernel.errors import MPIQError


def _cmd_qaoa(args: argparse.Namespace) -> int:
    from ..launch import mpiq_command
    from .graph import as_graph

    as_graph(args.graph)  # refuse a bad graph before anything starts
    modes = ["aware", "naive"] if args.mode == "both" else [args.mode]
    options = {"p": args.p, "eta": args.eta, "k": args.k, "shots": args.shots, "final_shots": args.final_shots,
               "maxiter": args.maxiter, "grid": args.grid, "merge": args.merge, "seed": args.seed}
    if args.max_part:
        options["max_part"] = args.max_part
    with tempfile.TemporaryDirectory(prefix="mpiq_qaoa_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec = {"graph": str(Path(args.graph).resolve()), "modes": modes, "options": options, "seed": args.seed,
                "devices": str(Path(args.devices).resolve()) if args.devices else None}
        spec_path.write_text(json.dumps(spec))
        cmd, env = mpiq_command([sys.executable, "-m", "mpiq_magic.qaoa.job", str(spec_path), str(out_path)],
                                classical=1, quantum=args.quantum, devices=args.devices)
        if args.timeout:
            cmd = ["timeout", "--kill-after=5", str(args.timeout), *cmd]
        rc = subprocess.call(cmd, env={**os.environ, **env})
        if not out_path.exists():
            raise MPIQError(f"The QAOA job under mpiexec exited with code {rc} without a result (see its messages above).")
        out = json.loads(out_path.read_text())
    for run in out["runs"]:
        print(f"{run['mode']:>5}: cut {run['cut']:g} of optimum {out['optimum']:g} ({out['optimum_method']}), "
              f"ratio {run['ratio']:.3f}, parts {[len(p) for p in run['split']['parts']]}, "
              f"P(optimal sub-solution) {run['p_optimal']:.3f}, {run['timings']['total']:.1f} s")
    if out.get("error"):
        print(f"mpiq: error: {out['error']}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0 if not out.get("error") else 1


def add_commands(sub) -> None:
    qaoa = sub.add_parser("qaoa", help="noise-aware distributed QAOA MaxCut of a graph JSON on Q monitors")
    qaoa.add_argument("graph", help='graph JSON: {"nodes": N, "edges": [[u, v] or [u, v, w], ...]}')
    qaoa.add_argument("-q", "--quantum", type=int, default=2, help="monitors (default 2)")
    qaoa.add_argument("--devices", help="devices TOML (e.g. calibration = \"FakeCairoV2\" entries)")
    qaoa.add_argument("--mode", choices=["aware", "naive", "both"], default="aware")
    qaoa.add_argument("-p", type=int, default=1, help="QAOA depth")
    qaoa.add_argument("--eta", type=float, default=0.05, help="error threshold (readout, 2q gate)")
    qaoa.add_argument("-k", type=int, default=2, help="regions per part")
    qaoa.add_argument("--max-part", type=int, default=None, help="most nodes per part")
    qaoa.add_argument("--shots", type=int, default=512)
    qaoa.add_argument("--final-shots", type=int, default=2048)
    qaoa.add_argument("--maxiter", type=int, default=40)
    qaoa.add_argument("--grid", type=int, default=4, help="start grid of G x G angle pairs (one batch)")
    qaoa.add_argument("--merge", choices=["exact", "qaoa"], default="exact",
                      help="parts' orientations: enumerated, or by a QAOA on qrank 0 (QAOA-in-QAOA)")
    qaoa.add_argument("--seed", type=int, default=0)
    qaoa.add_argument("--timeout", type=int, default=None, help="seconds before the job is killed")
    qaoa.add_argument("--json", metavar="FILE", help="write the result as JSON")
    qaoa.set_defaults(func=_cmd_qaoa)
