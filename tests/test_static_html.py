"""Figures in static pages: a chapter executed headless, exported with `jupyter nbconvert --to html`, shows every
plotly figure in a real browser (Debian's chromium, headless, with no network).

micourse chooses the "plotly_mimetype+notebook" renderer in a kernel (micourse.plots.setup_renderer): the HTML
part of each figure, with plotly.js embedded once, is what a static page shows. With plotly's own default (the
mimetype alone) the exported page had 0 of 11 figures.

Needs chromium: .ci/run installs it; locally `apt-get install chromium`, else this test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tools.notebooks import ROOT

pytestmark = pytest.mark.slow

CHAPTER = ROOT / "solutions" / "01_framework" / "01_framework.py"  # the cheapest to run (about 20 s), 11 figures
PLOTLY = "application/vnd.plotly.v1+json"
SVG = re.compile(r'<svg class="main-svg"[^>]*?width="([\d.]+)"[^>]*?height="([\d.]+)"')


def chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)


def rendered_sizes(dom: str) -> list[tuple[float, float] | None]:
    """For each plotly figure div in a rendered DOM, the size of its first SVG (None if it has none)."""
    sizes = []
    for chunk in dom.split('class="plotly-graph-div')[1:]:
        match = SVG.search(chunk)
        sizes.append((float(match.group(1)), float(match.group(2))) if match else None)
    return sizes


def test_rendered_sizes_reads_plotly_divs():
    dom = ('<div class="plotly-graph-div js-plotly-plot" id="a"><div><svg class="main-svg" x="1" width="635" '
           'height="525"></svg></div></div><div class="plotly-graph-div" id="b"></div>')
    assert rendered_sizes(dom) == [(635.0, 525.0), None]


def test_every_plotly_figure_of_an_exported_chapter_has_a_size(tmp_path, monkeypatch):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run should have installed it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (CI installs it in .ci/run; locally: apt-get install chromium)")
    from nbconvert import HTMLExporter

    from tools.execute import ENV, execute

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    keep: dict = {}
    ok, seconds, message = execute(CHAPTER, keep=keep)
    assert ok, message
    nb = keep["nb"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]
    assert outputs, f"{CHAPTER.name} shows no plotly figure"
    assert all("text/html" in o["data"] for o in outputs), "figures carry no HTML part: the renderer was not set"
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert html.count("plotly.js v") <= 2, "plotly.js should be embedded once, not once per figure"
    page = tmp_path / "chapter.html"
    page.write_text(html)
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=300).stdout
    sizes = rendered_sizes(dom)
    assert len(sizes) == len(outputs), f"{len(outputs)} figures in the notebook, {len(sizes)} figure divs in the page"
    empty = [i for i, s in enumerate(sizes) if s is None or min(s) <= 0]
    assert not empty, f"figures {empty} of {len(sizes)} have no size in the exported page"
