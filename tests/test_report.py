"""`birth report`: the page of a quick run and of a reproduction output, opened in headless
Chromium with every non-file request blocked: no console error, the curves, the attention view
and its slider are there and respond. Screenshots are left in the artifact folder."""
import os
import shutil

import pytest

from birth.cli import main
from birth.training.runs import RunDir
from trained_runs import artifact_dir, quick_run, reproduction

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser extra (Playwright) is not installed: pip install -e '.[all]'")
CHROMIUM = os.environ.get("BIRTH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, path):
    """The report in a fresh page; returns (page, console errors, requests that were blocked)."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, blocked = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()
    page.route("**/*", route)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20000)
    return page, errors, blocked


def pixels(page, selector):
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def drive(page, slider=True, points=10):
    """The curves, the legend toggle, and (with ``slider``) the slider redrawing the attention maps."""
    panels = [page.locator("#charts .chart-box").nth(i).get_attribute("data-panel")
              for i in range(page.locator("#charts .chart-box").count())]
    assert panels == ["accuracy", "probes", "heads", "losses", "kl"]  # the paper's task: all five
    curve = page.locator("[data-panel=probes] path.curve").first
    assert curve.get_attribute("d").count("L") == points - 1  # one vertex per evaluation
    page.locator("[data-panel=probes] .legend li").first.click()  # the first curve
    assert page.locator("[data-panel=probes] path.curve").first.is_hidden()
    if not slider:
        return
    slider = page.locator("#step-slider")
    layer2 = "canvas.attn-map[data-layer='1']"
    last, label_last = pixels(page, layer2), page.inner_text("#step-label")
    slider.fill("0")  # the first saved checkpoint
    first, label_first = pixels(page, layer2), page.inner_text("#step-label")
    assert label_first != label_last and first != last


def test_run_report_opens_offline_and_responds(browser, tmp_path):
    run = quick_run()
    assert main(["report", str(run)]) == 0
    page, errors, blocked = open_page(browser, run / "report.html")
    assert errors == [] and blocked == []
    assert page.inner_text("#step-label").startswith("step 200 ")
    assert "trigger \u2192 output" in page.inner_text("#attention")
    assert ("max |\u0394logit|" in page.inner_text("#transformer-lens")
            or "Not available" in page.inner_text("#transformer-lens"))
    page.screenshot(path=str(artifact_dir() / "report_run.png"), full_page=True)
    drive(page, points=len(RunDir(run).read_metrics()))
    page.screenshot(path=str(artifact_dir() / "report_run_step40.png"), full_page=True)


def test_reproduction_report_shows_claims_figures_and_runs(browser):
    out = reproduction()
    assert main(["report", str(out)]) == 0
    page, errors, blocked = open_page(browser, out / "report.html")
    assert errors == [] and blocked == []
    assert page.locator("#claims tr").count() >= 2
    assert page.locator("img.figure").count() >= 1
    assert page.eval_on_selector("img.figure", "i => i.naturalWidth") > 100   # the inlined PNG decoded
    options = page.locator("#run-select option")
    assert options.count() >= 2
    layer2 = "canvas.attn-map[data-layer='1']"
    before = pixels(page, layer2)
    page.select_option("#run-select", index=1)  # another run: its own curves and attention maps
    assert options.nth(1).inner_text() in page.inner_text("#run h2") and pixels(page, layer2) != before
    # tiny-scale runs keep their final checkpoint only: the slider is there, with one position
    assert page.get_attribute("#step-slider", "max") == "0"
    drive(page, slider=False, points=len(RunDir(sorted((out / "runs").iterdir())[1]).read_metrics()))
    page.screenshot(path=str(artifact_dir() / "report_reproduction.png"), full_page=True)


def test_report_of_a_folder_without_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err
