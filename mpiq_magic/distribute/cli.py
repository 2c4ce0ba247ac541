"""``mpiq distribute circuit.qasm``: a circuit across the monitors, headless.

The parent parses the OpenQASM file and plans the cuts first: feed-forward cuts where they apply
(exact samples of the distribution); otherwise, with ``--observables``, quasi-probability cuts
(expectation values with standard errors) -- a circuit neither can run is refused before any
process starts, naming the gate and layer. Then it launches
``mpiexec -n C+Q python -m mpiq_magic.distribute.job SPEC OUT`` and prints / writes the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..kernel.errors import MPIQError, UsageError

MODES = ("auto", "feed-forward", "qpd")


class DistributeArgumentError(UsageError):
    """A ``mpiq distribute`` argument that cannot work; raised before any process starts."""


def _cmd_distribute(args: argparse.Namespace) -> int:
    from ..kernel.config import default_devices, load_devices
    from .execute import plan_for_devices
    from .feedforward import FeedForwardError
    from .job import load_qasm

    if args.classical < 1 or args.quantum < 1:
        raise DistributeArgumentError(
            f"--classical and --quantum must be at least 1, got {args.classical} and {args.quantum}."
        )
    if args.shots < 1:
        raise DistributeArgumentError(f"--shots must be at least 1, got {args.shots}.")
    observables = _parse_observables(args.observables)
    if args.mode == "qpd" and not observables:
        raise DistributeArgumentError("--mode qpd estimates expectation values: give them with --observables "
                                      "(e.g. --observables ZZII,XIIX).")
    if args.max_overhead is not None and args.max_overhead <= 0:
        raise DistributeArgumentError(f"--max-overhead must be positive, got {args.max_overhead:g}.")
    path = Path(args.circuit)
    if not path.exists():
        raise DistributeArgumentError(f"Circuit file '{args.circuit}' does not exist.")
    try:
        circuit = load_qasm(str(path))
    except Exception as exc:  # qiskit's QASM errors
        raise DistributeArgumentError(f"Cannot read '{args.circuit}' as OpenQASM 2 or 3: {exc}") from None
    devices = load_devices(args.devices) if args.devices else default_devices(args.quantum)
    if len(devices) < args.quantum:
        raise DistributeArgumentError(f"--quantum {args.quantum} needs {args.quantum} devices; '{args.devices}' has {len(devices)}.")
    for obs in observables:
        if len(obs) != circuit.num_qubits:
            raise DistributeArgumentError(
                f"--observables '{obs}' has {len(obs)} letters; '{args.circuit}' has {circuit.num_qubits} qubits "
                "(one letter per qubit, qubit 0 rightmost).")
    off_diagonal = [obs for obs in observables if set(obs) & set("XY")]
    if off_diagonal and args.mode == "feed-forward":
        raise DistributeArgumentError(
            f"--observables {','.join(off_diagonal)} have X or Y terms, which feed-forward's Z-basis samples cannot "
            "estimate; use --mode auto or qpd.")
    if off_diagonal:
        if not args.quiet:
            print(f"observables with X or Y terms ({','.join(off_diagonal)}): quasi-probability cuts")
    elif args.mode != "qpd":
        try:
            plan, name = plan_for_devices(circuit, devices[: args.quantum], monitors=args.monitors,
                                          max_variants=args.max_variants)
        except FeedForwardError as exc:
            if not observables or args.mode == "feed-forward":
                raise
            if not args.quiet:
                print(f"not feed-forward ({exc.reason}): quasi-probability cuts for {len(observables)} observable(s)")
        else:
            if not args.quiet:
                print(f"plan ({name} partition): {plan.summary()}")
    spec = {"qasm": str(path.resolve()), "shots": args.shots, "monitors": args.monitors,
            "max_variants": args.max_variants, "optimization_level": args.optimization_level,
            "timeout": args.timeout, "top": args.top, "launched_at": time.time(),
            "observables": observables or None, "mode": args.mode, "max_overhead": args.max_overhead}
    t0 = time.perf_counter()
    out = _launch(spec, args.classical, args.quantum, args.devices, args.timeout)
    out["wall_seconds"] = time.perf_counter() - t0
    if not args.quiet:
        print(_format(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        if not args.quiet:
            print(f"wrote {args.json}")
    return 0


def _parse_observables(text: str | None) -> list[str]:
    """``ZZII,XIIX`` -> ``["ZZII", "XIIX"]`` (Pauli strings, qubit 0 rightmost)."""
    if not text:
        return []
    items = [t.strip().upper() for t in text.split(",") if t.strip()]
    for obs in items:
        bad = sorted(set(obs) - set("IXYZ"))
        if bad:
            raise DistributeArgumentError(f"--observables '{obs}' is not a Pauli string: {''.join(bad)!r} is not "
                                          "one of I, X, Y, Z.")
    return items


def _launch(spec: dict, classical: int, quantum: int, devices: str | None, timeout: float) -> dict:
    from ..ghz.job import PROGRESS_PREFIX
    from ..launch import mpiq_command

    with tempfile.TemporaryDirectory(prefix="mpiq-distribute-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        cmd, env = mpiq_command([sys.executable, "-m", "mpiq_magic.distribute.job", str(spec_path), str(out_path)],
                                classical=classical, quantum=quantum, devices=devices)
        cmd = ["timeout", "--kill-after=5", str(int(math.ceil(timeout))), *cmd]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith(PROGRESS_PREFIX)))
        out = json.loads(out_path.read_text()) if out_path.exists() else None
    if out is not None and out.get("error"):
        raise MPIQError(f"The distribute job failed: {out['error']}")
    if proc.returncode in (124, 137):
        raise MPIQError(f"The distribute job did not finish within --timeout {timeout:g} s and was stopped.")
    if proc.returncode != 0 or out is None:
        raise MPIQError(f"The distribute job under mpiexec exited with code {proc.returncode} without a result.")
    return out


def _format(out: dict, top: int = 8) -> str:
    if out.get("mode") == "qpd":
        return _format_qpd(out)
    lines = _format_feed_forward(out, top)
    for obs, value, err in zip(out.get("observables") or (), out.get("expectation_values") or (),
                               out.get("standard_errors") or ()):
        lines.append(f"  <{obs}> = {value:.4f} ± {err:.4f}")
    t = out["timings"]
    lines.append("  timings (s): " + "  ".join(f"{k} {v:.4f}" for k, v in t.items()))
    return "\n".join(lines)


def _format_qpd(out: dict) -> str:
    lines = [
        f"quasi-probability cuts ({out['partition']} partition): {len(out['cuts'])} cut(s), overhead "
        f"{out['overhead']:g}, {out['num_subexperiments']} subexperiments in {out['num_families']} families x "
        f"{out['shots']} shots",
    ]
    for obs, value, err in zip(out["observables"], out["expectation_values"], out["standard_errors"]):
        lines.append(f"  <{obs}> = {value:.4f} ± {err:.4f}")
    lines.append("  timings (s): " + "  ".join(f"{k} {v:.4f}" for k, v in out["timings"].items()))
    return "\n".join(lines)


def _format_feed_forward(out: dict, top: int) -> list[str]:
    modes = [c["mode"] for c in out["cuts"]]
    lines = [
        f"{out['qubits']} qubits, {out['shots']} shots on {len(out['blocks'])} monitor(s) ({out['partition']} "
        f"partition): {modes.count('frame')} Pauli-frame + {modes.count('variant')} two-variant feed-forward "
        f"cut(s), {out['executions']} circuit(s) per shot, {out['distinct_outcomes']} distinct outcome(s)",
    ]
    for bits, count in list(out["counts"].items())[:top]:
        lines.append(f"    {bits if len(bits) <= 48 else bits[:20] + '...' + bits[-20:]}  {count}")
    lines.append("  block  qrank  device        qubits  variants  methods")
    for b in out["blocks"]:
        lines.append(f"  {'':>5}  {b['qrank']:>5}  {b['device']:<12}  {len(b['qubits']):>6}  {b['variants']:>8}  "
                     f"{','.join(sorted({m or '-' for m in b['methods']}))}")
    return lines


def add_commands(sub) -> None:
    """Register ``distribute`` on the ``mpiq`` subparsers."""
    p = sub.add_parser("distribute", help="run an OpenQASM circuit across the monitors: exact feed-forward cuts, "
                                          "else quasi-probability cuts for --observables")
    p.add_argument("circuit", help="OpenQASM 2 or 3 file")
    p.add_argument("-c", "--classical", type=int, default=1, help="classical ranks (default 1)")
    p.add_argument("-q", "--quantum", type=int, default=2, help="quantum monitors (default 2)")
    p.add_argument("--devices", metavar="FILE", help="devices TOML file (default: Q local devices on 127.0.0.1)")
    p.add_argument("--shots", "-s", type=int, default=1024, help="shots (default %(default)s)")
    p.add_argument("--monitors", type=int, help="monitors the automatic partition fills (default: all)")
    p.add_argument("--max-variants", type=int, default=16, help="most variants one block may run (default %(default)s)")
    p.add_argument("--optimization-level", type=int, default=1, choices=[0, 1, 2, 3], help="transpiler level (default 1)")
    p.add_argument("--observables", metavar="PAULIS",
                   help="comma-separated Pauli strings (qubit 0 rightmost) whose expectation values to estimate; "
                        "needed for quasi-probability cuts")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="auto: feed-forward where it applies, else quasi-probability cuts (default)")
    p.add_argument("--max-overhead", type=float, default=1000.0, metavar="X",
                   help="refuse quasi-probability cuts whose sampling overhead is above X (default %(default)g)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--top", type=int, default=64, help="outcomes kept in the JSON counts (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600, metavar="SECONDS", help="stop the job after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(func=_cmd_distribute)
