"""``%%mpiq run``: a cell SPMD on a set of engines (``hc`` bound there), like ``%%px``."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .collect import cluster_error, named, wait_for_output

if TYPE_CHECKING:  # pragma: no cover
    from .lifecycle import HybridCluster


@dataclass
class RunResult:
    """Outcome of :meth:`HybridCluster.run`: return values and output, by engine id."""

    values: dict[int, Any]
    stdout: dict[int, str]
    stderr: dict[int, str]
    async_result: Any = field(repr=False, default=None)

    def display_outputs(self, groupby: str = "engine") -> None:
        """ipyparallel's display of the engines' outputs (stdout, stderr, displays)."""
        if self.async_result is not None:
            self.async_result.display_outputs(groupby=groupby)


def run(cluster: "HybridCluster", code: str, targets: str | Sequence[int], timeout: float | None,
        stream: bool, progress) -> RunResult:
    """The client's side; see ``HybridCluster.run``."""
    timeout = cluster._timeout(timeout)
    ids = cluster._live("run", cluster._ids(targets))
    ar = cluster.view(ids).execute(code, silent=False, block=False)
    split = dict(zip(ids, ar.split())) if len(ids) > 1 else {ids[0]: ar}
    if stream:
        with _stream_without_tracebacks(ar):
            out = cluster._collect("run", split, timeout, progress, interrupt=True)
            wait_for_output(split, out.values)
    else:
        out = cluster._collect("run", split, timeout, progress, interrupt=True)
        wait_for_output(split, out.values)
    result = RunResult(
        values={e: _execute_value(v) for e, v in out.values.items()},
        stdout={e: _single(split[e].stdout) for e in ids},
        stderr={e: _single(split[e].stderr) for e in ids},
        async_result=ar,
    )
    if out.failures:
        raise cluster_error(f"The cell failed on {len(named(out))} of {len(ids)} engine(s).", out, partial=result)
    return result


@contextmanager
def _stream_without_tracebacks(ar):
    """ipyparallel's live output of ``ar`` (``[stdout:N] ...``), minus the error tracebacks:
    errors are reported once, as ``[rank:run]`` lines, when the cell ends."""
    show = ar._iopub_streaming_output_callback

    def callback(eid, msg_future, msg):
        if msg["header"]["msg_type"] != "error":
            show(eid, msg_future, msg)

    ar._iopub_streaming_output_callback = callback  # looked up when stream_output() subscribes
    try:
        with ar.stream_output():
            yield
    finally:
        del ar._iopub_streaming_output_callback


def _single(value: Any) -> Any:
    """The one element of a one-engine result list."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _execute_value(value: Any) -> Any:
    """The execute_result of an ``execute`` reply, as text (what ``%%px`` shows as Out[...])."""
    value = _single(value)
    data = getattr(value, "data", None)
    if isinstance(data, Mapping):
        return data.get("text/plain")
    return value
