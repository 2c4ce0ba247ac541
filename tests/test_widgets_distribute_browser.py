"""The distribute view live in JupyterLab (headless Chromium), as ``%%mpiq distribute`` uses it: the
view is shown and the partition arrives at once, then the monitors' ``executed`` events.

Checks what a person sees: the heat map drawn with the partition's cells, the per-monitor bars full
at the end, the figure edited in place while events arrive. Guards a real failure: an empty
FigureWidget shown and filled right away stayed blank when it was the first plotly figure on the
page (plotly's in-place edits were dropped while its widget code loaded). Screenshot:
test-artifacts/widgets/distribute.png. Same requirements as test_widgets_browser.py.
"""

from __future__ import annotations

import time

import pytest

from test_widgets_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WATCH_JS, jupyterlab  # noqa: F401

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run does this on CI)."),
]

SHOW_CELL = """\
from mpiq_magic.distribute.examples import cnot_ladder
from mpiq_magic.distribute.magic import Width, plan_on_client
from mpiq_magic.widgets import DistributeWidget

planned = plan_on_client([Width(10)] * 4, cnot_ladder(24))
view = DistributeWidget()
assert view.mode == "widget", view.mode  # mode="auto" under JupyterLab
view.show()
view.event(planned.event)  # at once, as %%mpiq distribute does
cells = [list(row) for row in view.view.cells]
"""

RUN_CELL = """\
import json, time
for q, done, total in [(0, 1, 1), (1, 1, 2), (2, 1, 2), (3, 1, 2), (1, 2, 2), (2, 2, 2), (3, 2, 2)]:
    view.event({"event": "executed", "qrank": q, "done": done, "total": total, "seconds": 0.1})
    time.sleep(0.25)
view.finish()
print("MPIQ-DISTRIBUTE-DONE", json.dumps({"cells": cells, "monitors": view.monitors}))
"""

INSPECT_JS = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
      g => g.layout && g.layout.meta && g.layout.meta.mpiq === 'distribute');
  if (!gd) return null;
  const byMeta = {};
  (gd.calcdata || []).forEach(cd => { byMeta[cd[0].trace.meta] = cd; });
  const heat = byMeta['mpiq-partition-cells'];
  const widths = meta => {
    const node = byMeta[meta] && byMeta[meta][0].node3 && byMeta[meta][0].node3.node();
    return node ? [...node.querySelectorAll('path')].filter(p => p.getAttribute('d') && p.getAttribute('d') !== 'M0,0Z')
                    .map(p => p.getBBox().width) : [];
  };
  const image = gd.querySelector('.hm image');
  return {z: heat ? heat[0].trace.z : null, image: image ? image.getBBox().width : 0,
          done: widths('mpiq-distribute-done'), total: widths('mpiq-distribute-total'),
          updates: gd.__mpiqUpdates || 0};
}"""


@pytest.mark.parametrize("jupyterlab", [[SHOW_CELL, RUN_CELL]], indirect=True)
def test_distribute_view_renders_live_in_jupyterlab(jupyterlab):
    import json

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url = f"{jupyterlab['base']}/lab/tree/widgets.ipynb?token={jupyterlab['token']}"
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(jupyterlab["tmp"] / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
        )
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_function(
                """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                           const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                           return k && k.status === 'idle' && w.content && w.content.widgets.length === 2; }""",
                timeout=90_000,
            )
            page.evaluate("() => { const w = window.jupyterapp.shell.currentWidget; w.content.activeCellIndex = 0;"
                          " window.jupyterapp.commands.execute('notebook:run-cell-and-select-next'); return true; }")
            page.wait_for_function(f"() => ({INSPECT_JS})() !== null && ({INSPECT_JS})().image > 0", timeout=60_000)
            assert page.evaluate(WATCH_JS) >= 1
            page.evaluate("""() => { window.__mpiqStates = new Set();
                new MutationObserver(() => document.querySelectorAll('.mpiq-distribute-header')
                    .forEach(e => window.__mpiqStates.add(e.textContent.split(' circuits done')[0].slice(-3))))
                  .observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-cell'); return true; }")
            done = page.locator(".jp-OutputArea-output", has_text="MPIQ-DISTRIBUTE-DONE")
            done.wait_for(timeout=60_000)
            page.wait_for_timeout(500)  # let the last restyle paint
            seen = page.evaluate(INSPECT_JS)
            states = page.evaluate("() => [...window.__mpiqStates]")
            page.locator(".jp-OutputArea-output").first.screenshot(path=str(ARTIFACTS / "distribute.png"))
            text = done.first.text_content()
        finally:
            ctx.close()
    out = json.loads(text.split("MPIQ-DISTRIBUTE-DONE", 1)[1])
    # the heat map holds the partition (qubit rows x layer columns, qrank per cell) and is drawn
    assert seen["z"] == out["cells"] and seen["image"] > 100, seen
    # every monitor's bar is full: done == assigned, as drawn
    assert len(seen["done"]) == len(seen["total"]) == 4, seen
    assert all(abs(d - t) < 1.0 and t > 0 for d, t in zip(seen["done"], seen["total"])), seen
    # edited in place while the events came, and the header went through intermediate counts
    assert seen["updates"] >= 1 and len(states) >= 2, (seen["updates"], states)
