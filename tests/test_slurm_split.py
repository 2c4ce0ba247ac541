"""Split workflows (``mpiq slurm --split``), their checkpoints, QPU accounting and its Gantt view,
without SLURM (the SLURM runs are in tests/test_slurm.py)."""

from __future__ import annotations

import json

import pytest

from mpiq_magic.cli import main
from mpiq_magic.kernel.errors import MPIQError, UsageError
from mpiq_magic.qpu_accounting import account, read_jobcomp
from mpiq_magic.slurm import Step, current_step

JOBCOMP = """\
JobId=40 JobState=COMPLETED Partition=cpu StartTime=2026-01-01T10:00:00 EndTime=2026-01-01T10:00:30 HetJobId=40 HetJobOffset=0
JobId=41 JobState=CANCELLED Partition=qpu StartTime=2026-01-01T10:00:00 EndTime=2026-01-01T10:00:04 HetJobId=40 HetJobOffset=1
JobId=42 JobState=COMPLETED Partition=cpu StartTime=2026-01-01T10:00:31 EndTime=2026-01-01T10:01:00 HetJobId=42 HetJobOffset=0
JobId=43 JobState=CANCELLED Partition=qpu StartTime=2026-01-01T10:00:31 EndTime=2026-01-01T10:00:35 HetJobId=42 HetJobOffset=1
JobId=44 JobState=COMPLETED Partition=cpu StartTime=2026-01-01T10:01:00 EndTime=2026-01-01T10:01:01
"""


def test_split_script_chains_subjobs_with_afterok(capsys):
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "-q", "2", "--release",
                 "--split", "3", "--exclusive-qpu", "job.py"]) == 0
    text = capsys.readouterr().out
    assert "export MPIQ_STEPS=3" in text and "for step in $(seq 0 2)" in text
    assert "--dependency=afterok:$previous" in text and "MPIQ_STEP=$step sbatch --parsable" in text
    assert "#SBATCH --partition=qpu --nodes=1 --ntasks=2 --exclusive" in text
    assert 'scancel "$SLURM_JOB_ID+1"' in text  # each sub-job releases its QPU early
    assert main(["slurm", "--classical-partition", "cpu", "--quantum-partition", "qpu", "--split", "-1", "x.py"]) == 2
    assert "split must be 0 (one job) or the number of sub-jobs, got -1" in capsys.readouterr().err


def test_steps_hand_state_on_through_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("MPIQ_STEP", "0")
    monkeypatch.setenv("MPIQ_STEPS", "2")
    monkeypatch.setenv("MPIQ_CHECKPOINT", str(tmp_path))
    first = current_step()
    assert first.first and not first.last and first.load(default=[]) == []
    first.save([1.5])
    monkeypatch.setenv("MPIQ_STEP", "1")
    second = current_step()
    assert second.last and second.load() == [1.5]
    with pytest.raises(MPIQError, match=r"Sub-job 1 of 3 found no checkpoint .*step-0.pkl"):
        Step(1, 3, tmp_path / "empty").load()
    monkeypatch.setenv("MPIQ_STEP", "2")
    with pytest.raises(UsageError, match=r"\$MPIQ_STEP must be in 0..1 \(\$MPIQ_STEPS=2\), got 2"):
        current_step()
    monkeypatch.setenv("MPIQ_STEP", "one")
    with pytest.raises(UsageError, match="must be integers, got 'one' and '2'"):
        current_step()


def test_accounting_from_slurm_records_and_blocks(tmp_path):
    log = tmp_path / "jobcomp.txt"
    log.write_text(JOBCOMP)
    records = read_jobcomp(log)
    t0 = account("x", [("A", "40")], records).start
    blocks = [{"job": "40", "start": t0 + 1, "end": t0 + 3}, {"job": "42", "start": t0 + 32, "end": t0 + 34}]
    acc = account("release", [("A", "40"), ("A", "42"), ("B", "44")], records, blocks,
                  sessions={"40": [{"busy_seconds": 1.5, "attached": t0 + 0.5, "released": t0 + 3.5}]})
    assert acc.makespan == 61 and acc.qpu_held == 8 and acc.qpu_busy == 4 and acc.qpu_idle == 4
    data = json.loads(json.dumps(acc.to_dict()))
    assert data["monitor_busy_s"] == 1.5 and data["qpu_attached_s"] == 3 and data["jobs"][0]["allocations"]["qpu"][1] - t0 == 4
    assert data["jobs"][2]["qpu_held_s"] == 0  # a classical-only job holds no QPU
    with pytest.raises(UsageError, match="SLURM has no completion record of job 99 \\(workflow C\\)"):
        account("x", [("C", "99")], records)
    with pytest.raises(MPIQError, match="Cannot read SLURM's job-completion log"):
        read_jobcomp(tmp_path / "missing.txt")


def test_gantt_views(tmp_path):
    from mpiq_magic.widgets.qpu import gantt, gantt_html

    log = tmp_path / "jobcomp.txt"
    log.write_text(JOBCOMP)
    records = read_jobcomp(log)
    t0 = account("x", [("A", "40")], records).start
    acc = account("release", [("A", "40"), ("B", "42")], records, [{"job": "40", "start": t0 + 1, "end": t0 + 3}])
    page = gantt_html(acc)
    assert page.count("<rect") == 5 and "cpu · A" in page and "QPU held 8.0 s" in page
    fig = gantt(acc)
    assert len(fig.data) == 5 and "idle 6.0 s" in fig.layout.title.text
