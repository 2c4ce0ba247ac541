"""Common machinery of the live views: mode, throttled refresh, display in every mode."""

from __future__ import annotations

import abc
import functools
import sys
import threading
from typing import TYPE_CHECKING, Any

from .fallback import Mode, in_kernel, resolve_mode, static_bundle
from .throttle import Throttle

if TYPE_CHECKING:
    import ipywidgets
    import plotly.graph_objects as go

#: Refresh rate limits per mode (refreshes per second).
WIDGET_RATE = 10.0
STATIC_RATE = 1.0
TEXT_RATE = 0.5


class LiveView(abc.ABC):
    """A view over data that changes while work runs.

    Subclasses keep their data in plain Python state (guarded by ``self._lock``), call
    :meth:`_changed` after every mutation, and implement :meth:`figure` (static figure from the
    state), :meth:`summary` (text), :meth:`_build_panel` and :meth:`_sync_panel` (widget mode:
    create the ipywidgets once, then update them in place).
    """

    name = "view"

    def __init__(self, *, mode: str | None = "auto", max_rate: float | None = None) -> None:
        self.mode: Mode = resolve_mode(mode)
        self._lock = threading.RLock()
        self._panel: ipywidgets.Widget | None = None
        self._handle: Any = None  # IPython DisplayHandle in static/text mode inside a kernel
        self._shown = False
        self._version = 0  # bumped on every change
        self._finishing = False
        self._printed = -1  # version last printed in text mode
        default = {"widget": WIDGET_RATE, "static": STATIC_RATE, "text": TEXT_RATE}[self.mode]
        # Text goes to a terminal line by line: never from a timer thread.
        self._throttle = Throttle(self._refresh, max_rate or default, trailing=self.mode != "text")

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def figure(self) -> "go.Figure":
        """A static plotly figure of the current state."""
        ...

    @abc.abstractmethod
    def summary(self) -> str:
        """A text summary of the current state."""
        ...

    @abc.abstractmethod
    def _build_panel(self) -> "ipywidgets.Widget":
        ...

    @abc.abstractmethod
    def _sync_panel(self) -> None:
        ...

    def _text_progress(self) -> str | None:
        """A line to print in text mode while work runs (None: print nothing)."""
        return None

    # ------------------------------------------------------------------ public API
    @property
    def widget(self) -> "ipywidgets.Widget":
        """The ipywidgets container (widget mode only), built on first use."""
        if self.mode != "widget":
            raise ValueError(
                f"This {self.name} view is in {self.mode!r} mode, which has no ipywidgets; "
                f"create it with mode='widget' to get one."
            )
        with self._lock:
            if self._panel is None:
                self._panel = self._build_panel()
                self._sync_panel()
        return self._panel

    def show(self) -> "LiveView":
        """Display the view once (later calls do nothing); returns the view."""
        if self._shown:
            return self
        self._shown = True
        from IPython.display import display

        if self.mode == "widget":
            display(self._widget_bundle(), raw=True)
        elif in_kernel():
            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:  # text in a terminal or plain Python
            self._print_summary()
        return self

    def flush(self) -> None:
        """Show every pending change now."""
        self._throttle.flush()

    def finish(self) -> None:
        """Show the final state (outside a kernel: print the summary if it changed since
        :meth:`show`). Later changes still apply."""
        terminal = self.mode != "widget" and self._handle is None and not in_kernel()
        self._finishing = terminal  # the summary replaces a last progress line
        try:
            self._throttle.flush()
        finally:
            self._finishing = False
        if terminal and self._shown:
            self._print_summary()

    def release(self) -> None:
        """Stop refreshing and close this view's ipywidgets (and the widgets inside them)."""
        try:
            self._throttle.flush()
        except Exception:
            pass
        with self._lock:
            panel, self._panel = self._panel, None
        if panel is not None:
            close_tree(panel)
        for name in ("_fig",):
            fig = getattr(self, name, None)
            if fig is not None and hasattr(fig, "close"):
                try:
                    fig.close()
                except Exception:
                    pass
                forget_file_watch(fig)

    @property
    def throttle(self) -> Throttle:
        return self._throttle

    # ------------------------------------------------------------------ internals
    def _changed(self) -> None:
        self._version += 1
        self._throttle.poke()

    def _print_summary(self) -> None:
        if self._printed != self._version:
            self._printed = self._version
            print(self.summary(), flush=True)

    def _refresh(self) -> None:
        if self.mode == "widget":
            with self._lock:
                if self._panel is not None:
                    self._sync_panel()
        elif self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
        elif self.mode == "text" and self._shown and not self._finishing and not in_kernel():
            line = self._text_progress()
            if line:
                print(line, file=sys.stderr, flush=True)

    def _bundle(self) -> dict[str, Any]:
        with self._lock:
            if self.mode == "text":
                return {"text/plain": self.summary()}
            return static_bundle(self.figure(), self.summary())

    def _widget_bundle(self) -> dict[str, Any]:
        """The container's widget-view bundle with this view's summary as its plain text."""
        bundle = dict(self.widget._repr_mimebundle_())
        with self._lock:
            bundle["text/plain"] = self.summary()
        return bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.mode == "widget":
            return self._widget_bundle()
        return self._bundle()

    def __repr__(self) -> str:
        with self._lock:
            return self.summary()


#: The FigureWidget's frontend module (see :func:`figure_widget`): plotly's widget code is loaded
#: once per page in the background; edits that arrive meanwhile are kept and replayed.
_LIVE_FIGURE_ESM = """
const KEY = "__mpiqPlotlyWidgetModule", LAST = "__mpiqPlotlyWidgetLastInit", QUIET_MS = 3000;
const EDITS = ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_restyle",
  "_py2js_relayout", "_py2js_update", "_py2js_animate", "_py2js_removeLayoutProps", "_py2js_removeTraceProps"];
let widget = null;
export default {
  initialize({ model }) {
    const pending = [], keepers = [];
    for (const name of EDITS) {
      const keep = () => { const v = model.get(name); if (v !== null) pending.push([name, v]); };
      model.on("change:" + name, keep);
      keepers.push([name, keep]);
    }
    // Importing the bundle blocks the page for seconds, and a figure model created meanwhile misses
    // anywidget's 2 s deadline: start it once no figure model has been created for QUIET_MS.
    globalThis[LAST] = performance.now();
    if (!globalThis[KEY]) {
      const esm = model.get("_plotly_esm");
      globalThis[KEY] = new Promise((resolve) => {
        const wait = () => {
          const quiet = performance.now() - globalThis[LAST];
          quiet < QUIET_MS ? setTimeout(wait, QUIET_MS - quiet) : resolve();
        };
        wait();
      }).then(() => {
        const url = URL.createObjectURL(new Blob([esm], { type: "text/javascript" }));
        return import(url).finally(() => URL.revokeObjectURL(url));
      });
    }
    widget = globalThis[KEY].then((mod) => {
      const w = mod.default();
      for (const [name, keep] of keepers) model.off("change:" + name, keep);
      w.initialize({ model });
      for (const [name, v] of pending) { model.set(name, v); model.set(name, null); }
      return w;
    });
  },
  async render({ model, el, signal }) {
    const w = await widget;
    return w.render({ model, el, signal });
  },
};
"""


def figure_widget(figure: Any = None, **kwargs: Any) -> "go.FigureWidget":
    """A plotly ``FigureWidget`` that shows and updates in JupyterLab (same arguments as
    ``go.FigureWidget``).

    Two failures of a plain ``FigureWidget`` (plotly 7.1, anywidget 0.11), seen in JupyterLab:

    * it opens its comm with an empty ``_widget_data``/``_widget_layout`` and sends the figure in a
      second message, which the frontend applies only after plotly's view has drawn (once, from
      the model's state then): the figure rendered blank (default axes, no title). This one opens
      its comm once the figure is set, so the first message carries it.
    * anywidget applies a model's messages once that model's module has initialized, and drops
      them all for good if that takes over 2 s; plotly's module is a 4.6 MB bundle, imported afresh
      per figure (4-6 s each in headless Chromium at load 8-11): no in-place edit ever arrived.
      This one's module is small: it imports plotly's bundle once per page in the background
      (once no figure model has been created for 3 s, as the import blocks the page for seconds),
      keeps the edits that arrive meanwhile and replays them into plotly's model before drawing.
      A figure model created while that first import runs can still miss the deadline.
    """
    return _live_figure_class()(figure, **kwargs)


@functools.cache
def _live_figure_class() -> type:
    import plotly.graph_objects as go
    import traitlets

    class LiveFigureWidget(go.FigureWidget):
        """``FigureWidget`` with the fixes described in :func:`figure_widget`."""

        _esm = _LIVE_FIGURE_ESM
        _plotly_esm = traitlets.Unicode(str(go.FigureWidget._esm)).tag(sync=True)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._mpiq_constructing = True
            try:
                super().__init__(*args, **kwargs)
            finally:
                self._mpiq_constructing = False
            self.open()

        def open(self) -> None:
            if not getattr(self, "_mpiq_constructing", False):
                super().open()

    return LiveFigureWidget


class FigureSync:
    """Apply freshly computed trace and layout properties to a ``FigureWidget`` in place.

    Only top-level properties that changed since the last sync are sent, in one
    ``batch_update`` (one message to the frontend); the figure and its traces are never re-created.
    """

    def __init__(self, fig: Any, traces: list[dict], layout: dict) -> None:
        self.fig = fig
        self._traces = [dict(t) for t in traces]
        self._layout = dict(layout)
        self.updates = 0

    def apply(self, traces: list[dict], layout: dict) -> bool:
        """Send what changed; returns False if nothing did."""
        if len(traces) != len(self.fig.data):
            raise ValueError(
                f"A live figure keeps its {len(self.fig.data)} traces; got properties for {len(traces)}."
            )
        edits = []
        for i, props in enumerate(traces):
            prev = self._traces[i]
            changed = {k: v for k, v in props.items() if k != "type" and prev.get(k) != v}
            if changed:
                edits.append((i, changed))
        relayout = {k: v for k, v in layout.items() if self._layout.get(k) != v}
        if not edits and not relayout:
            return False
        with self.fig.batch_update():
            for i, changed in edits:
                self.fig.data[i].update(changed)
            if relayout:
                self.fig.layout.update(relayout)
        self._traces = [dict(t) for t in traces]
        self._layout = dict(layout)
        self.updates += 1
        return True


def forget_file_watch(widget: Any) -> None:
    """Drop what keeps a closed anywidget (plotly's ``FigureWidget``) alive for ever: anywidget
    connects, per instance, a closure over the widget to its class's ``_esm``/``_css`` file
    signal (hot reload) and never disconnects it, so every figure ever made (~0.3 MiB each)
    stays in memory."""
    for key in ("_esm", "_css"):
        for cls in type(widget).__mro__:
            signal = getattr(cls.__dict__.get(key), "changed", None)
            for slot in list(getattr(signal, "_slots", None) or ()):
                try:
                    fn = slot.dereference()
                    if any(getattr(c, "cell_contents", None) is widget for c in getattr(fn, "__closure__", None) or ()):
                        signal.disconnect(fn)
                except Exception:
                    continue


def close_tree(widget: Any) -> None:
    """Close an ipywidget and every widget it contains (children, nested boxes, figures)."""
    seen: set = set()
    stack = [widget]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        # children, and every widget-valued trait (layout, style, nested boxes)
        for name in getattr(w, "keys", ()) or ():
            try:
                value = getattr(w, name)
            except Exception:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            stack.extend(v for v in values if hasattr(v, "close") and hasattr(v, "model_id"))
        for child in getattr(w, "children", ()) or ():
            stack.append(child)
        try:
            w.close()
        except Exception:
            pass
        forget_file_watch(w)
