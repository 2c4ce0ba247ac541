"""``mpiq demo`` and ``mpiq ghz``: a distributed GHZ under the bundled ``mpiexec``.

The parent validates the arguments (nothing starts on a bad one), writes a job spec, launches
``mpiexec -n 1+Q python -m mpiq_magic.ghz.job SPEC OUT``, shows progress from the ranks'
``MPIQ-PROGRESS`` lines, then prints and writes the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..kernel.config import METHODS, NOISE_KEYS, DeviceSpec, default_devices, load_devices
from ..kernel.errors import MPIQError, UsageError
from .job import PROGRESS_PREFIX

DEMO_DEFAULTS = {"qubits": 120, "nodes": 3, "blocks": 6, "shots": 1024}


class GHZArgumentError(UsageError):
    """A ``mpiq ghz`` / ``mpiq demo`` argument that cannot work; raised before any process starts."""


# ----------------------------------------------------------------------------- argument checks
def parse_noise(text: str | None) -> dict[str, Any] | None:
    """``depolarizing=0.001,depolarizing_2q=0.01,readout=0.02`` | ``generic`` | ``none`` -> noise table."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "none", "ideal", "off"):
        return {}
    if text.lower() == "generic":
        return {"generic": True}
    noise: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in NOISE_KEYS or key == "generic":
            raise GHZArgumentError(
                f"--noise item {part.strip()!r} is not KEY=PROBABILITY with KEY one of "
                f"depolarizing, depolarizing_2q, readout (or use --noise generic / --noise none)."
            )
        try:
            p = float(value)
        except ValueError:
            raise GHZArgumentError(f"--noise {key}={value.strip()!r}: the probability is not a number.") from None
        if not 0.0 <= p <= 1.0:
            raise GHZArgumentError(f"--noise {key}={p:g}: a probability must lie in [0, 1].")
        noise[key] = p
    return noise


def check_ghz_args(
    qubits: int,
    nodes: int,
    blocks: int | None,
    shots: int,
    method: str | None,
    serial: bool,
    devices: Sequence[DeviceSpec],
) -> int:
    """Validate a GHZ request against the devices; returns the number of blocks."""
    if qubits < 1:
        raise GHZArgumentError(f"--qubits must be at least 1, got {qubits}.")
    if nodes < 1:
        raise GHZArgumentError(f"--nodes must be at least 1 (the number of quantum monitors), got {nodes}.")
    if shots < 1:
        raise GHZArgumentError(f"--shots must be at least 1, got {shots}.")
    if method is not None and method not in METHODS:
        raise GHZArgumentError(f"--method {method!r} is unknown; choose one of {', '.join(METHODS)}.")
    blocks = nodes if blocks is None else blocks
    if blocks < 1:
        raise GHZArgumentError(f"--blocks must be at least 1, got {blocks}.")
    if blocks > qubits:
        raise GHZArgumentError(
            f"Cannot cut {qubits} qubit(s) into {blocks} blocks: every block needs a qubit; "
            f"use --blocks {qubits} or fewer."
        )
    if not serial and nodes > blocks:
        raise GHZArgumentError(
            f"--nodes {nodes} starts more monitors than the {blocks} block(s) need; "
            f"use --nodes {blocks} or fewer, or --blocks {nodes} or more."
        )
    width = math.ceil(qubits / blocks)
    used = devices[:1] if serial else devices[: min(nodes, blocks)]
    if len(devices) < (1 if serial else nodes):
        raise GHZArgumentError(f"--nodes {nodes} needs {nodes} devices, but only {len(devices)} are configured.")
    narrow = min(used, key=lambda d: d.num_qubits)
    if width > narrow.num_qubits:
        need = math.ceil(qubits / narrow.num_qubits)
        raise GHZArgumentError(
            f"Blocks of {width} qubits ({qubits} qubits in {blocks} blocks) are wider than device "
            f"{narrow.name} ({narrow.num_qubits} qubits); use --blocks {need} or more."
        )
    chosen = method or narrow.method
    if chosen == "statevector":
        available = _available_memory()
        # integer arithmetic throughout: 2**width is exact at any width, never a float overflow
        if width > 200 or 16 * 2**width > available:
            raise GHZArgumentError(
                f"A {width}-qubit statevector needs {statevector_size(width)} but only "
                f"{_bytes_text(available)} of memory is available; use more blocks or "
                f"--method automatic (GHZ circuits are Clifford: stabilizer simulation)."
            )
    return blocks


def statevector_size(width: int) -> str:
    """The memory of a ``width``-qubit complex128 statevector, readable at any width."""
    exponent = width + 4  # 16 bytes per amplitude
    if exponent <= 60:
        return _bytes_text(2**exponent)
    return f"2^{exponent} bytes (2^{exponent - 60} EiB)"


def _bytes_text(n: int) -> str:
    for unit, shift in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def check_timeout(value: float, option: str = "--timeout") -> float:
    """A finite, positive number of seconds; else an error before anything starts."""
    if not (value > 0 and math.isfinite(value)):
        raise GHZArgumentError(f"{option} must be a positive number of seconds, got {value:g}.")
    return value


def check_output_path(path: str | None, option: str) -> None:
    """The file can be written (its directory exists and is writable): checked before the job
    runs, so a bad path does not lose the result of a whole run."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise GHZArgumentError(f"{option} {path!r} is a directory; give a file name.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise GHZArgumentError(f"{option} {path!r}: the directory {str(parent)!r} does not exist.")
    if target.exists() and not os.access(target, os.W_OK) or not os.access(parent, os.W_OK | os.X_OK):
        raise GHZArgumentError(f"{option} {path!r} is not writable.")


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resolve_devices(path: str | None, count: int, method: str | None, noise: dict | None) -> list[DeviceSpec]:
    from dataclasses import replace

    specs = load_devices(path) if path else default_devices(count)
    overrides: dict[str, Any] = {}
    if method:
        overrides["method"] = method
    if noise is not None:
        overrides["noise"] = noise or None
    return [replace(s, **overrides) for s in specs]


# ----------------------------------------------------------------------------- launching
class Progress:
    """Turns ``MPIQ-PROGRESS`` lines into a status line on stderr, shown only on long runs.

    Nothing is printed until a run has taken ``after`` seconds; then the latest status is
    shown (a rewritten line on a terminal, at most one line every 2 s otherwise).
    """

    def __init__(self, total_blocks: int, *, enabled: bool = True, after: float = 2.0):
        self.total = total_blocks
        self.done = 0
        self.enabled = enabled
        self.after = after
        self.start = time.monotonic()
        self.run_start = self.start
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        now = time.monotonic()
        if kind == "executed":
            self.done += 1
            text = f"executed {self.done}/{self.total} blocks"
        elif kind == "ready":
            text = f"processes ready after {event['seconds']:.1f} s"
        elif kind == "run":
            self.done = 0
            self.run_start = now
            text = f"run {event['index'] + 1}/{event['of']} {event.get('label', '')}".rstrip()
        else:
            text = {"cut": "cut", "compile": "compiled the blocks", "scatter": "payloads scattered, executing",
                    "gather": "results gathered, reconstructing", "reconstruct": "reconstructed"}.get(kind, kind or "")
        if not self.enabled or now - self.run_start < self.after:
            return
        if now - self.last < (0.2 if self.tty else 2.0) and kind not in ("gather", "reconstruct"):
            return
        self.last = now
        self.shown = True
        elapsed = now - self.start
        if self.tty:
            sys.stderr.write(f"\r\x1b[K[mpiq {elapsed:6.1f}s] {text}")
        else:
            sys.stderr.write(f"[mpiq {elapsed:6.1f}s] {text}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def launch_job(
    spec: dict[str, Any],
    quantum: int,
    *,
    timeout: float,
    progress: Progress | None = None,
    classical: int = 1,
) -> dict[str, Any]:
    """Run the job under the bundled mpiexec with ``classical`` + ``quantum`` ranks; return OUT."""
    import shutil

    from ..cluster.processes import make_temp_dir
    from ..launch import Supervised, mpiq_command

    tmp = make_temp_dir("mpiq-ghz-")  # removed below, by the watchdog if this process dies
    try:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec = {**spec, "classical": classical, "launched_at": time.time()}
        spec_path.write_text(json.dumps(spec))
        cmd, env = mpiq_command(
            [sys.executable, "-m", "mpiq_magic.ghz.job", str(spec_path), str(out_path)],
            classical=classical,
            quantum=quantum,
        )
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}

        def on_line(line: str) -> None:
            if line.startswith(PROGRESS_PREFIX):
                if progress is not None:
                    try:
                        progress(json.loads(line[len(PROGRESS_PREFIX):]))
                    except ValueError:
                        pass
            else:
                sys.stdout.write(line)

        job = Supervised(cmd, full_env, timeout=timeout, on_line=on_line, dirs=[tmp])
        try:
            rc = job.run()
        finally:
            if progress is not None:
                progress.close()
        out = json.loads(out_path.read_text()) if out_path.exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if out is not None and out.get("error"):
        raise MPIQError(f"The GHZ job failed: {out['error']}")
    if rc == 124 or rc == 137:
        raise MPIQError(f"The GHZ job did not finish within --timeout {timeout:g} s and was stopped.")
    if rc != 0 or out is None:
        raise MPIQError(f"The GHZ job under mpiexec exited with code {rc} without a result (see its messages above).")
    return out


# ----------------------------------------------------------------------------- output
def format_run(run: dict[str, Any], *, blocks_table: bool = True, top: int = 4) -> str:
    t = run["timings"]
    lines = [
        f"GHZ({run['qubits']}): {run['blocks']} block(s) of {'/'.join(str(w) for w in sorted(set(run['block_widths']), reverse=True))} "
        f"qubits on {run['monitors_used']} monitor(s){' (serial)' if run['serial'] else ''}, "
        f"{run['shots']} shots, method {run['method']}",
        f"  P(0...0) = {run['p_all_zero']:.4f}   P(1...1) = {run['p_all_one']:.4f}   "
        f"GHZ population = {run['ghz_population']:.4f}   distinct outcomes = {run['distinct_outcomes']}",
    ]
    shown = list(run["counts"].items())[:top]
    for bits, count in shown:
        label = bits if len(bits) <= 48 else f"{bits[:20]}...{bits[-20:]} ({len(bits)} bits)"
        lines.append(f"    {label}  {count}")
    lines.append(
        "  timings (s): "
        + "  ".join(f"{k} {t[k]:.4f}" for k in ("cut", "compile", "scatter", "barrier", "execute", "gather", "reconstruct"))
        + f"  | total {t['total']:.4f}"
    )
    cc = run.get("compile_cache", {})
    lines.append(
        f"  compile: {cc.get('compiled', 0)} block(s) transpiled, {cc.get('reused', 0)} reused from the "
        f"compile cache; payloads {run.get('payload_bytes', 0)} bytes in all"
    )
    if blocks_table:
        lines.append("  block  qubits  qrank  device        method                P(raw 0..0)  P(raw 1..1)  flipped  seconds")
        stats = run["block_stats"]
        rows = stats if len(stats) <= 12 else stats[:6] + [None] + stats[-5:]
        for b in rows:
            if b is None:
                lines.append("  ...")
                continue
            lines.append(
                f"  {b['index']:>5}  {b['width']:>6}  {b['qrank']!s:>5}  {b['device'] or '-':<12}  "
                f"{(b['method'] or '-'):<20}  {b['p_raw_zero']:>11.4f}  {b['p_raw_one']:>11.4f}  "
                f"{b['flip_rate']:>7.3f}  {b['seconds'] or 0:.4f}"
            )
    return "\n".join(lines)


def format_barrier(record: dict[str, Any] | None, rounds: list[dict] | None = None) -> str:
    if not record:
        return "QQ barrier: no record."
    trig = record.get("trigger")
    base = trig if trig is not None else min(record["arrivals"])
    lines = [f"QQ barrier #{record['seq']} before execution (times relative to the trigger, microseconds):"]
    releases = record.get("releases") or [None] * len(record["members"])
    for who, arr, rel in zip(record["members"], record["arrivals"], releases):
        rel_text = f"{(rel - base) * 1e6:+10.1f}" if rel is not None else "         -"
        lines.append(f"  {who:<9} arrived {(arr - base) * 1e6:+12.1f}   released {rel_text}")
    if record.get("skew") is not None:
        lines.append(f"  release skew {record['skew'] * 1e6:.1f} us")
    if rounds:
        skews = sorted(r["skew"] * 1e6 for r in rounds if r.get("skew") is not None)
        if skews:
            lines.append(
                f"  {len(skews)} more QQ barriers: release skew median {skews[len(skews) // 2]:.1f} us, "
                f"max {skews[-1]:.1f} us"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- commands
def _cmd_ghz(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    check_output_path(args.json, "--json")
    noise = parse_noise(args.noise)
    devices = resolve_devices(args.devices, max(args.nodes, 1), args.method, noise)
    blocks = check_ghz_args(args.qubits, args.nodes, args.blocks, args.shots, args.method, args.serial, devices)
    quantum = 1 if args.serial else args.nodes
    spec = {
        "devices": str(Path(args.devices).resolve()) if args.devices else None,
        "timeout": args.timeout,
        "warmup": True,
        "top": args.top,
        "runs": [
            {"qubits": args.qubits, "blocks": blocks, "shots": args.shots, "serial": args.serial,
             "method": args.method, "noise": noise, "label": f"GHZ({args.qubits})"}
        ],
    }
    progress = Progress(blocks, enabled=not args.quiet)
    t0 = time.perf_counter()
    out = launch_job(spec, quantum, timeout=args.timeout, progress=progress)
    wall = time.perf_counter() - t0
    run = out["runs"][0]
    run["nodes"] = args.nodes
    run["startup"] = out.get("startup")
    run["wall_seconds"] = wall
    run["peak_rss_bytes"] = out.get("peak_rss_bytes")
    if not args.quiet:
        print(format_run(run, blocks_table=True))
        s = out.get("startup") or {}
        print(f"  start-up {s.get('total', float('nan')):.2f} s (mpiexec + imports + init + warm-up); wall {wall:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1))
        if not args.quiet:
            print(f"wrote {args.json}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    check_output_path(args.report, "--report")
    noise = parse_noise(args.noise)
    devices = resolve_devices(None, args.nodes, None, noise)
    blocks = check_ghz_args(args.qubits, args.nodes, args.blocks, args.shots, None, False, devices)
    spec = {
        "timeout": args.timeout,
        "warmup": True,
        "barriers": args.barriers,
        "top": 64,
        "runs": [
            {"qubits": args.qubits, "blocks": blocks, "shots": args.shots, "serial": False,
             "method": None, "noise": noise, "label": f"GHZ({args.qubits})"}
        ],
    }
    print(
        f"mpiq demo: 1 classical rank + {args.nodes} quantum monitors on 127.0.0.1 under "
        f"the bundled mpiexec; distributed GHZ({args.qubits}) in {blocks} blocks."
    )
    t0 = time.perf_counter()
    out = launch_job(spec, args.nodes, timeout=args.timeout, progress=Progress(blocks))
    wall = time.perf_counter() - t0
    run = out["runs"][0]
    print("\n== topology ==")
    print(out.get("topology_text", ""))
    print("\n== barrier ==")
    print(format_barrier(run.get("barrier"), out.get("barrier_rounds")))
    print("\n== reconstruction ==")
    print(format_run(run))
    s = out.get("startup") or {}
    print(f"\nstart-up {s.get('total', float('nan')):.2f} s, pipeline {run['timings']['total']:.3f} s, wall {wall:.2f} s")
    from .report import write_report

    path = write_report(args.report, out, run)
    print(f"wrote {path}")
    return 0


def add_commands(sub) -> None:
    """Register ``demo`` and ``ghz`` on the ``mpiq`` subparsers."""
    demo = sub.add_parser("demo", help="distributed GHZ on 1 classical + 3 local monitors; writes mpiq-report.html")
    demo.add_argument("--qubits", type=int, default=DEMO_DEFAULTS["qubits"], help="GHZ size (default %(default)s)")
    demo.add_argument("--nodes", type=int, default=DEMO_DEFAULTS["nodes"], help="quantum monitors (default %(default)s)")
    demo.add_argument("--blocks", type=int, default=DEMO_DEFAULTS["blocks"], help="blocks (default %(default)s)")
    demo.add_argument("--shots", type=int, default=DEMO_DEFAULTS["shots"], help="shots (default %(default)s)")
    demo.add_argument("--noise", help="depolarizing=P,depolarizing_2q=P,readout=P | generic | none")
    demo.add_argument("--barriers", type=int, default=20, help="extra QQ barriers timed (default %(default)s)")
    demo.add_argument("--report", default="mpiq-report.html", help="HTML report path (default %(default)s)")
    demo.add_argument("--timeout", type=float, default=300, help="stop the job after this many seconds")
    demo.set_defaults(func=_cmd_demo)

    ghz = sub.add_parser("ghz", help="distributed GHZ: cut, compile, scatter, barrier, execute, gather, reconstruct")
    ghz.add_argument("--qubits", "-n", type=int, required=True, metavar="N", help="GHZ size N")
    ghz.add_argument("--nodes", "-m", type=int, required=True, metavar="M", help="quantum monitors M")
    ghz.add_argument("--blocks", "-b", type=int, metavar="B", help="blocks B (default: M); blocks are dealt to monitors")
    ghz.add_argument("--shots", "-s", type=int, default=1024, metavar="S", help="shots (default %(default)s)")
    ghz.add_argument("--method", metavar="METHOD", help=f"simulation method: {' | '.join(METHODS)} (default: the device's)")
    ghz.add_argument("--noise", metavar="SPEC", help="depolarizing=P,depolarizing_2q=P,readout=P | generic | none")
    ghz.add_argument("--serial", action="store_true", help="run every block on one monitor in turn (T_serial)")
    ghz.add_argument("--devices", metavar="FILE", help="devices TOML file (default: M local devices on 127.0.0.1)")
    ghz.add_argument("--json", metavar="FILE", help="write the result as JSON")
    ghz.add_argument("--top", type=int, default=64, help="outcomes kept in the JSON counts (default %(default)s)")
    ghz.add_argument("--timeout", type=float, default=1800, metavar="SECONDS", help="stop the job after this many seconds")
    ghz.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    ghz.set_defaults(func=_cmd_ghz)
