"""QPU accounting: how long each job held the quantum partition, and how long it used it.

*Held* intervals come from SLURM's own records (the job-completion log of ``JobCompType=
jobcomp/filetxt``, one line per job and per heterogeneous component: ``StartTime``/``EndTime``
of the component on the quantum partition, one-second resolution); *busy* intervals come from
the workload (each quantum block's start and end, as the classical side timed it) and the
service's ``sessions.jsonl`` (attach/release instants, the monitors' summed execution seconds).
Idle = held - busy: QPU time allocated to a job and not used (seed 003, Fig. 2a's red arrows).

The figure is :func:`mpiq_magic.widgets.qpu.gantt`; :meth:`QPUAccounting.to_dict` is the JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from .kernel.errors import MPIQError, UsageError


@dataclass(frozen=True)
class Interval:
    start: float  # time.time()
    end: float
    label: str = ""

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class JobAccount:
    """One SLURM job (a het job, or one sub-job of a split workflow) of a workflow."""

    workflow: str
    job_id: str
    partition_intervals: dict[str, Interval]  # partition -> the component's allocation
    busy: list[Interval] = field(default_factory=list)  # quantum blocks
    monitor_busy_seconds: float = 0.0  # from sessions.jsonl, summed over monitors
    attached: list[Interval] = field(default_factory=list)  # sessions.jsonl: attach -> release
    state: str = ""

    def held(self, partition: str) -> float:
        iv = self.partition_intervals.get(partition)
        return iv.seconds if iv else 0.0

    @property
    def busy_seconds(self) -> float:
        return sum(b.seconds for b in self.busy)


@dataclass
class QPUAccounting:
    """Every job of a scenario, and the totals the benchmark compares."""

    scenario: str
    jobs: list[JobAccount]
    quantum_partition: str = "qpu"

    @property
    def start(self) -> float:
        return min(iv.start for j in self.jobs for iv in j.partition_intervals.values())

    @property
    def end(self) -> float:
        return max(iv.end for j in self.jobs for iv in j.partition_intervals.values())

    @property
    def makespan(self) -> float:
        return self.end - self.start

    @property
    def qpu_held(self) -> float:
        return sum(j.held(self.quantum_partition) for j in self.jobs)

    @property
    def qpu_busy(self) -> float:
        return sum(j.busy_seconds for j in self.jobs)

    @property
    def qpu_attached(self) -> float:
        """Seconds a client was attached to the service (sessions.jsonl), summed over jobs."""
        return sum(iv.seconds for j in self.jobs for iv in j.attached)

    @property
    def qpu_idle(self) -> float:
        """Allocated and not used: held - busy, summed over jobs."""
        return sum(max(0.0, j.held(self.quantum_partition) - j.busy_seconds) for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "quantum_partition": self.quantum_partition,
            "makespan_s": round(self.makespan, 3),
            "qpu_held_s": round(self.qpu_held, 3),
            "qpu_busy_s": round(self.qpu_busy, 3),
            "qpu_idle_s": round(self.qpu_idle, 3),
            "qpu_attached_s": round(self.qpu_attached, 3),
            "qpu_attached_idle_s": round(max(0.0, self.qpu_attached - self.qpu_busy), 3),
            "monitor_busy_s": round(sum(j.monitor_busy_seconds for j in self.jobs), 3),
            "jobs": [
                {
                    "workflow": j.workflow, "job_id": j.job_id, "state": j.state,
                    "allocations": {p: [iv.start, iv.end] for p, iv in j.partition_intervals.items()},
                    "busy": [[b.start, b.end, b.label] for b in j.busy],
                    "attached": [[a.start, a.end] for a in j.attached],
                    "qpu_held_s": round(j.held(self.quantum_partition), 3),
                    "qpu_busy_s": round(j.busy_seconds, 3),
                    "monitor_busy_s": round(j.monitor_busy_seconds, 3),
                }
                for j in self.jobs
            ],
        }


def read_jobcomp(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """SLURM's job-completion records (``jobcomp/filetxt``): ``JobId`` -> its ``Key=Value`` fields.

    Raises:
        MPIQError: the file cannot be read.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise MPIQError(f"Cannot read SLURM's job-completion log {path}: {exc.strerror}.") from None
    records: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()  # SLURM writes local time


def account(
    scenario: str,
    jobs: Iterable[tuple[str, str]],
    records: dict[str, dict[str, str]],
    blocks: Iterable[dict[str, Any]] = (),
    sessions: dict[str, list[dict[str, Any]]] | None = None,
    quantum_partition: str = "qpu",
    service_jobs: dict[str, Iterable[str]] | None = None,
) -> QPUAccounting:
    """Accounting of ``jobs`` (``(workflow, het job id)`` pairs) from SLURM's ``records``.

    ``blocks``: the workload's quantum blocks, dicts with ``job`` (the SLURM job id it ran in),
    ``start``, ``end`` and optional ``label``. ``sessions``: the service's ``sessions.jsonl``
    lines per job id (``busy_seconds`` summed into ``monitor_busy_seconds``). ``service_jobs``: per
    job id, the separate jobs that ran its quantum service (``mpiq slurm --qpu-on-demand``: the
    port directory's ``service-job``); their allocations count as that job's.

    Raises:
        UsageError: a job has no completion record (it has not ended, or the log is another
            cluster's).
    """
    blocks = list(blocks)
    out = []
    for workflow, job_id in jobs:
        extra = set((service_jobs or {}).get(job_id, ()))
        components = [r for r in records.values() if job_id in (r["JobId"], r.get("HetJobId")) or r["JobId"] in extra]
        if not components:
            raise UsageError(f"SLURM has no completion record of job {job_id} (workflow {workflow}); "
                             "wait until it has ended.")
        intervals = {r["Partition"]: Interval(_stamp(r["StartTime"]), _stamp(r["EndTime"]), r["JobId"])
                     for r in components}
        leader = next((r for r in components if r["JobId"] == job_id), components[0])
        acc = JobAccount(workflow, job_id, intervals, state=leader.get("JobState", ""))
        acc.busy = [Interval(b["start"], b["end"], b.get("label", "")) for b in blocks if str(b["job"]) == job_id]
        served = (sessions or {}).get(job_id, [])
        acc.monitor_busy_seconds = sum(s.get("busy_seconds", 0.0) for s in served)
        acc.attached = [Interval(s["attached"], s["released"], s.get("client", "")) for s in served if s.get("released")]
        out.append(acc)
    return QPUAccounting(scenario, out, quantum_partition)


def read_sessions(port_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a service's ``sessions.jsonl`` (empty if it served nobody)."""
    path = Path(port_dir) / "sessions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
