"""Live views of an MPI-Q run: communicator topology, barrier timing, GHZ reconstruction, progress,
circuit partitions and distributed runs, distributed QAOA, pilot tasks.

Each view is a plain Python object holding its data; how it shows depends on ``mode``
(see :mod:`.fallback`): ``"widget"`` (ipywidgets + plotly ``FigureWidget``, updated in place,
at most ~10 refreshes per second), ``"static"`` (a plotly figure replaced as data changes) or
``"text"``; ``"auto"`` picks one for the current frontend.

>>> from mpiq_magic.widgets import TopologyWidget
>>> view = TopologyWidget(hc.topology).show()          # doctest: +SKIP
>>> view.update_status("qrank 1", "busy")              # doctest: +SKIP

The figures are also available as pure functions of the data (for HTML reports):
:func:`topology_figure`, :func:`barrier_figure`, :func:`ghz_figure`, :func:`progress_figure`,
:func:`partition_figure`, :func:`qaoa_figure`, :func:`pilot_timeline_figure`.
The events the views consume are :mod:`mpiq_magic.events`.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TopologyWidget": ".topology",
    "topology_figure": ".topology",
    "BarrierWidget": ".barrier",
    "barrier_figure": ".barrier",
    "GHZWidget": ".ghz",
    "ghz_figure": ".ghz",
    "ProgressWidget": ".progress",
    "progress_figure": ".progress",
    "PartitionWidget": ".distribute",
    "DistributeWidget": ".distribute",
    "partition_figure": ".distribute",
    "partition_view": ".distribute",
    "QAOAWidget": ".qaoa",
    "qaoa_figure": ".qaoa",
    "PilotView": ".pilot",
    "pilot_timeline_figure": ".pilot",
    "pilot_table_html": ".pilot",
    "Dashboard": ".events",
    "LiveView": ".base",
    "Throttle": ".throttle",
    "resolve_mode": ".fallback",
    "detect_mode": ".fallback",
    "static_bundle": ".fallback",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import plotly/ipywidgets (nor MPI).
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
