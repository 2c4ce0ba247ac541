"""Which output a view produces, and the static forms used without a widget frontend.

Three modes:

* ``"widget"`` — a live ipywidgets container holding plotly ``FigureWidget``\\ s, updated in place;
* ``"static"`` — a plotly figure (plus an HTML/text summary) in a display that is replaced as
  the data changes, so an executed notebook (nbclient, nbconvert, papermill) keeps the final
  result;
* ``"text"`` — a text summary (terminal IPython, plain Python, ``mpiexec`` scripts).

``mode="auto"`` is resolved by :func:`resolve_mode`, in this order:

1. the ``MPIQ_WIDGETS`` environment variable (``widget``, ``static`` or ``text``), if set;
2. no IPython kernel (plain Python, a terminal IPython) -> ``text``;
3. ipywidgets or anywidget missing -> ``static``;
4. a kernel started by a Jupyter server (``JPY_SESSION_NAME`` is set: JupyterLab, Notebook 7,
   Voila) or by VS Code, or running in Colab -> ``widget``;
5. a kernel started by a headless executor (the process named by ``JPY_PARENT_PID`` is
   nbclient, nbconvert, papermill, nbval/pytest, nbmake, jupyter-execute, jupyter-book,
   quarto, jupyter console) -> ``static``;
6. any other kernel -> ``widget``.
"""

from __future__ import annotations

import html
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import plotly.graph_objects as go

Mode = Literal["widget", "static", "text"]
MODES: tuple[str, ...] = ("widget", "static", "text")
ENV_VAR = "MPIQ_WIDGETS"

#: Substrings of a kernel parent's command line that mark an executor without a widget frontend.
HEADLESS_PARENTS: tuple[str, ...] = (
    "nbclient", "nbconvert", "papermill", "nbval", "pytest", "nbmake", "jupyter-execute",
    "jupyter_execute", "jupyter-book", "jupyter_book", "quarto", "jupyter-console",
    "jupyter_console", "myst_nb", "sphinx",
)

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def _kernel_shell() -> Any | None:
    """The running IPython shell if it is a kernel (ZMQ) shell, else None."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover - broken IPython install
        return None
    if shell is None or not getattr(shell, "kernel", None):
        return None
    return shell


def in_kernel() -> bool:
    """True inside a Jupyter kernel (as opposed to plain Python or a terminal IPython)."""
    return _kernel_shell() is not None


def _parent_cmdline() -> str:
    """Command line of the process that launched this kernel ('' if unknown)."""
    pid = os.environ.get("JPY_PARENT_PID") or str(os.getppid())
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return ""


def _widget_libraries() -> bool:
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def detect_mode() -> Mode:
    """The mode ``"auto"`` stands for here (see the module docstring for the rules)."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(
                f"{ENV_VAR}={forced!r} is not a widget mode; use one of {', '.join(MODES)}."
            )
        return forced  # type: ignore[return-value]
    if not in_kernel():
        return "text"
    if not _widget_libraries():
        return "static"
    if os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID") or "google.colab" in sys.modules:
        return "widget"
    parent = _parent_cmdline().lower()
    if any(name in parent for name in HEADLESS_PARENTS):
        return "static"
    return "widget"


def resolve_mode(mode: str | None = "auto") -> Mode:
    """Validate an explicit ``mode`` or resolve ``"auto"``/None with :func:`detect_mode`."""
    if mode is None or mode == "auto":
        return detect_mode()
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a widget mode; use 'auto' or one of {', '.join(MODES)}.")
    if mode == "widget" and not _widget_libraries():
        raise ValueError("mode='widget' needs ipywidgets and anywidget; install them or use mode='static'.")
    return mode  # type: ignore[return-value]


def static_bundle(fig: "go.Figure | None", summary: str, *, cdn: bool = True) -> dict[str, Any]:
    """A display bundle: the plotly figure (JSON), HTML (summary + figure) and plain text.

    Frontends that render plotly's mime type show the figure; nbconvert's HTML shows the
    summary and the figure (plotly.js from its CDN when ``cdn``); terminals show the text.
    """
    text = html.escape(summary)
    bundle: dict[str, Any] = {"text/plain": summary}
    body = f'<pre class="mpiq-summary">{text}</pre>'
    if fig is not None:
        spec = json.loads(fig.to_json())
        spec["config"] = dict(PLOTLY_CONFIG)
        bundle[PLOTLY_MIME] = spec
        if cdn:
            body += fig.to_html(full_html=False, include_plotlyjs="cdn", config=PLOTLY_CONFIG)
    bundle["text/html"] = f'<div class="mpiq-static">{body}</div>'
    return bundle
