"""The live widgets in a real browser: JupyterLab on loopback, driven by headless Chromium.

A notebook shows the four views, then runs a real small MPI-Q job (2 classical ranks + 3 quantum
monitors under the bundled mpiexec: topology, CC/QQ/ALL barriers, a distributed GHZ(12)) and
feeds its progress events to the views while it runs. The test checks what a person sees: the
topology's drawn classical and quantum nodes, the barrier plot's process rows, GHZ bars that sum
to 1, progress at 6/6, and that the figures were updated in place while the job ran. Screenshots
go to test-artifacts/widgets/.

Needs Debian's chromium at /usr/bin/chromium (``.ci/run`` installs it) and the test extra
(jupyterlab, playwright — Playwright drives that executable; it never downloads a browser).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "widgets"
JOB = REPO / "tests" / "data" / "widgets_job.py"
CLASSICAL, QUANTUM, QUBITS, ROUNDS = 2, 3, 12, 4
BLOCKS = 2 * QUANTUM  # widgets_job.py cuts GHZ(QUBITS) into two blocks per monitor
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.timeout(420),  # ~100 s alone; a loaded 2-core machine (load 10-15) needs more
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run does this on CI)."),
]

SETUP_CELL = """\
from mpiq_magic.widgets import BarrierWidget, Dashboard, GHZWidget, ProgressWidget, TopologyWidget
views = [TopologyWidget(), BarrierWidget(keep=12), GHZWidget(), ProgressWidget(label="GHZ(%d)")]
assert all(v.mode == "widget" for v in views), [v.mode for v in views]  # mode="auto" under JupyterLab
dash = Dashboard(*views)
for v in views:
    v.show()
""" % QUBITS

RUN_CELL = """\
import json, os, subprocess, sys, tempfile
from mpiq_magic.launch import mpiexec_path
cmd = ["timeout", "--kill-after=5", "90", mpiexec_path(), "-n", "%d", sys.executable, %r, "%d", "%d"]
env = {**os.environ, "MPIQ_CLASSICAL": "%d", "PYTHONUNBUFFERED": "1"}
events = 0
with tempfile.TemporaryFile("w+") as err:
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.startswith("MPIQ-PROGRESS "):
                dash.event(json.loads(line[len("MPIQ-PROGRESS "):]))
                events += 1
    err.seek(0)
    assert proc.returncode == 0, err.read()
dash.finish()
assert not dash.errors, dash.errors
print("MPIQ-NOTEBOOK-DONE", json.dumps({"events": events, "refreshes": {v.name: v.throttle.calls for v in views}}))
""" % (CLASSICAL + QUANTUM, str(JOB), QUBITS, ROUNDS, CLASSICAL)

# Everything the page shows, read from the rendered plots (SVG) and the widgets' HTML.
INSPECT_JS = """() => {
  const plots = {};
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const kind = gd.layout && gd.layout.meta && gd.layout.meta.mpiq;
    if (!kind) continue;
    const traces = {};
    (gd.calcdata || []).forEach((cd, i) => {
      const t = cd[0].trace;
      const node = cd[0].node3 && cd[0].node3.node ? cd[0].node3.node() : null;
      const drawn = node ? node.querySelectorAll('path.point').length : -1;
      const bars = node ? [...node.querySelectorAll('path')].filter(p => p.getAttribute('d') && p.getAttribute('d') !== 'M0,0Z') : [];
      traces[t.meta || ('#' + i)] = {name: t.name, drawn, x: t.x ? [...t.x] : [], y: t.y ? [...t.y] : [],
        barHeights: bars.map(p => p.getBBox().height), color: t.marker && t.marker.color};
    });
    const yticks = [...gd.querySelectorAll('.yaxislayer-above .ytick text, g.yaxislayer-above g.ytick text')]
      .filter(e => e.closest('.yaxislayer-above')).map(e => ({text: e.textContent, axis: e.closest('g[class*="yaxislayer"]') ? 'y' : '?'}));
    const axes = {};
    for (const [k, ax] of Object.entries(gd._fullLayout)) {
      if (/^[xy]axis\\d*$/.test(k) && ax && ax._length) axes[k] = {length: ax._length, range: ax.range};
    }
    plots[kind] = {traces, axes, title: gd._fullLayout.title.text,
      ytickText: [...gd.querySelectorAll('g.ytick text')].map(e => e.textContent),
      updates: gd.__mpiqUpdates || 0};
  }
  const text = sel => [...document.querySelectorAll(sel)].map(e => e.textContent);
  return {plots, headers: {topology: text('.mpiq-topology-header'), barrier: text('.mpiq-barrier-header'),
    ghz: text('.mpiq-ghz-header'), progress: text('.mpiq-progress-header')},
    progressBars: [...document.querySelectorAll('.widget-progress progress, .jupyter-widgets.widget-progress')].length};
}"""

# Count in-place updates (FigureWidget -> Plotly.restyle/relayout/update) once the plots exist.
WATCH_JS = """() => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    if (gd.__mpiqWatched) continue;
    gd.__mpiqWatched = true; gd.__mpiqUpdates = 0;
    for (const ev of ['plotly_restyle', 'plotly_relayout', 'plotly_update']) gd.on(ev, () => { gd.__mpiqUpdates += 1; });
  }
  return document.querySelectorAll('.js-plotly-plot').length;
}"""


# The three plots drawn from their figures (their layout's meta names them) and the progress view.
SHOWN_JS = """() => {
  const kinds = new Set([...document.querySelectorAll('.js-plotly-plot')]
    .map(gd => gd._fullLayout && gd.layout && gd.layout.meta && gd.layout.meta.mpiq).filter(Boolean));
  return ['topology', 'barrier', 'ghz'].every(k => kinds.has(k))
    && document.querySelectorAll('.mpiq-progress-header').length >= 1;
}"""


def _final_state_drawn(seen: dict) -> bool:
    """Whether the page shows the job's end (what the test then checks in detail)."""
    plots = seen["plots"]
    try:
        dist = plots["ghz"]["traces"]["mpiq-ghz-distribution"]
        blocks = plots["ghz"]["traces"]["mpiq-ghz-blocks"]
        topo = plots["topology"]["traces"]
        return (len(dist["barHeights"]) >= 2 and len(blocks["barHeights"]) == BLOCKS
                and set(blocks["color"] or []) == {"#2ca02c"}
                and topo["mpiq-classical"]["drawn"] == CLASSICAL and topo["mpiq-quantum"]["drawn"] == QUANTUM
                and len(plots["barrier"]["ytickText"]) >= CLASSICAL + QUANTUM
                and any(f"{BLOCKS}/{BLOCKS} blocks done" in h for h in seen["headers"]["progress"])
                and any("P(0…0)" in h for h in seen["headers"]["ghz"]))
    except (KeyError, TypeError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path, kernel: str, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "mpiq test", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))


@pytest.fixture
def jupyterlab(tmp_path, request):
    """JupyterLab on 127.0.0.1 with isolated config/data/settings dirs and a kernel for this Python,
    opening widgets.ipynb: this module's two cells, or the cells given by indirect parametrization."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[test]').")
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]').")
    dirs = {name: tmp_path / name for name in ("config", "data", "runtime", "settings", "workspaces", "root")}
    for d in dirs.values():
        d.mkdir()
    kernel_dir = dirs["data"] / "kernels" / "mpiq-test"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mpiq test", "language": "python",
    }))
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    _notebook(dirs["root"] / "widgets.ipynb", "mpiq-test", getattr(request, "param", None) or [SETUP_CELL, RUN_CELL])
    token, port = secrets.token_hex(16), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MPIQ_WIDGETS"}
    env.update(JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
               JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), PYTHONUNBUFFERED="1")
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={dirs['root']}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.news_url=None", "--LabApp.extension_manager=readonly", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(dirs["root"]),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"JupyterLab did not start on {base} within 60 s (exit {proc.poll()}):\n"
                            + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.25)
        yield {"base": base, "token": token, "tmp": tmp_path, "log": tmp_path / "jupyterlab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_widgets_render_live_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url = f"{jupyterlab['base']}/lab/tree/widgets.ipynb?token={jupyterlab['token']}"
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    console: list[str] = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(jupyterlab["tmp"] / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
        )
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: console.append(f"error: uncaught {e}"))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_function(
                """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                           const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                           return k && k.status === 'idle' && w.content && w.content.widgets.length === 2; }""",
                timeout=90_000,
            )
            timings["lab_ready"] = time.monotonic() - t0
            # Cell 1: show the views; wait until the four outputs render, then watch their updates.
            page.evaluate("() => { const w = window.jupyterapp.shell.currentWidget; w.content.activeCellIndex = 0;"
                          " window.jupyterapp.commands.execute('notebook:run-cell-and-select-next'); return true; }")
            page.wait_for_function(SHOWN_JS, timeout=180_000)
            assert page.evaluate(WATCH_JS) >= 3
            page.evaluate("""() => { window.__mpiqProgress = new Set();
                const obs = new MutationObserver(() => document.querySelectorAll('.mpiq-progress-header')
                    .forEach(e => window.__mpiqProgress.add(e.textContent.split(' · ')[0])));
                obs.observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
            timings["widgets_shown"] = time.monotonic() - t0
            # Cell 2: the real MPI-Q job, streaming its events into the views.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-cell'); return true; }")
            done = page.locator(".jp-OutputArea-output", has_text="MPIQ-NOTEBOOK-DONE")
            done.wait_for(timeout=120_000)
            timings["job_done"] = time.monotonic() - t0
            # The browser draws behind the kernel: wait (generously) until the final state is drawn.
            deadline = time.monotonic() + 90
            while not _final_state_drawn(seen := page.evaluate(INSPECT_JS)) and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            timings["final_drawn"] = time.monotonic() - t0
            page.wait_for_timeout(500)  # let the last restyle paint
            seen = page.evaluate(INSPECT_JS)
            seen["progressStates"] = page.evaluate("() => [...window.__mpiqProgress]")
            done_text = done.first.text_content()
            page.screenshot(path=str(ARTIFACTS / "notebook.png"), full_page=True)
            outputs = page.locator(".jp-OutputArea-output")
            for i, name in enumerate(("topology", "barrier", "ghz", "progress")):
                outputs.nth(i).screenshot(path=str(ARTIFACTS / f"{name}.png"))
            (ARTIFACTS / "seen.json").write_text(json.dumps(seen, indent=1))
        except Exception:
            # What the page showed when a wait ran out, for whoever reads the failure.
            try:
                page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            except Exception:
                pass
            (ARTIFACTS / "failure.json").write_text(json.dumps({"timings": timings, "console": console}, indent=1))
            raise
        finally:
            ctx.close()
    timings["total"] = time.monotonic() - t0
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
    (ARTIFACTS / "console.json").write_text(json.dumps(console, indent=1))
    errors = [c for c in console if c.startswith("error") and "favicon" not in c]
    plots = seen["plots"]
    assert set(plots) >= {"topology", "barrier", "ghz"}, (sorted(plots), errors)

    # Topology: one drawn node per classical rank and per quantum monitor.
    topo = plots["topology"]["traces"]
    assert topo["mpiq-classical"]["drawn"] == CLASSICAL, topo["mpiq-classical"]
    assert topo["mpiq-quantum"]["drawn"] == QUANTUM, topo["mpiq-quantum"]
    assert any(f"{CLASSICAL} classical · {QUANTUM} quantum" in h for h in seen["headers"]["topology"]), seen["headers"]

    # Barrier timing: one row per process (CC, QQ and ALL barriers together cover all five).
    expected = {f"rank {i}" for i in range(CLASSICAL)} | {f"qrank {j}" for j in range(QUANTUM)}
    rows = set(plots["barrier"]["ytickText"])
    assert expected <= rows and len(rows & expected) == CLASSICAL + QUANTUM, plots["barrier"]["ytickText"]
    drawn_flags = {k: v["drawn"] for k, v in plots["barrier"]["traces"].items() if k.startswith("mpiq-barrier-")}
    assert all(n > 0 for n in drawn_flags.values()), drawn_flags

    # GHZ: the distribution's bars sum to 1, as drawn (pixel heights over the axis scale) and as data.
    dist = plots["ghz"]["traces"]["mpiq-ghz-distribution"]
    assert abs(sum(dist["y"]) - 1.0) < 1e-9, dist
    ax = plots["ghz"]["axes"]["yaxis2"]
    px_per_unit = ax["length"] / (ax["range"][1] - ax["range"][0])
    assert len(dist["barHeights"]) == len(dist["y"]) >= 2, dist
    assert abs(sum(dist["barHeights"]) / px_per_unit - 1.0) < 0.02, (dist["barHeights"], px_per_unit)
    blocks = plots["ghz"]["traces"]["mpiq-ghz-blocks"]
    assert len(blocks["barHeights"]) == BLOCKS and set(blocks["color"]) == {"#2ca02c"}, blocks
    assert any(f"{BLOCKS}/{BLOCKS} blocks done" in h for h in seen["headers"]["ghz"]), seen["headers"]["ghz"]

    # Progress reached 6/6, and it and the figures were updated in place while the job ran.
    assert any(f"{BLOCKS}/{BLOCKS} blocks done" in h for h in seen["headers"]["progress"]), seen["headers"]
    assert len(seen["progressStates"]) >= 2, seen["progressStates"]
    for kind in ("topology", "barrier", "ghz"):
        assert plots[kind]["updates"] >= 1, (kind, plots[kind]["updates"])
    assert "MPIQ-NOTEBOOK-DONE" in done_text
