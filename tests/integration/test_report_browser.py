"""The report in headless Chromium: it renders from disk, requests nothing outside the file, and
shows the run's numbers. Keeps a screenshot in the ignored test-artifacts/report.png (`make screenshots`
copies it to docs/img/ for the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import need_binary, need_module
from tests.report.report_fixture import LengthJudge, add_later_stages, build_run, expected_funnel


ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def report(endpoint, tmp_path_factory):
    from distillflow.report import render_report

    judge = LengthJudge()
    try:
        run = build_run(tmp_path_factory.mktemp("browser"), endpoint.base_url, judge.base_url)
    finally:
        judge.close()
    add_later_stages(run)
    return run, render_report(run)


def test_report_renders_offline_in_chromium(report):
    sync_api = need_module("playwright.sync_api", "pip install -e '.[dev]'")
    chromium = need_binary("chromium", "apt-get install -y chromium (make browser does it as root)")
    run, path = report
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        # playwright gives every launch a fresh temporary profile of its own
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            text = page.inner_text("body")
            funnel_text = page.inner_text("#funnel")
            images = page.eval_on_selector_all("img.plot", "els => els.map(e => [e.alt, e.naturalWidth])")
            nodes = page.locator("svg.dag g.dag-node").count()
            # an ignored folder: `make screenshots` copies it to docs/img/ for the README
            artifacts = ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()

    assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests
    want = expected_funnel(run)
    lines = [line.strip() for line in funnel_text.splitlines() if line.strip()]
    for stage in ("prompts", "generations", "judged", "kept"):
        i = lines.index(stage)
        assert lines[i + 1] == f"{want[stage]:,}", (stage, lines[i : i + 3])
    for needle in ("alpha", "beta", "referee (judge)", "Retention: student vs teacher", "50%", "88%", "75.0%",
                   "last loss", "Judge scores per teacher", "Review: judge and human agreement"):
        assert needle in text, needle
    assert len(images) == 4 and all(w > 100 for _, w in images), images  # every embedded PNG decoded
    assert nodes == 10  # source, generate, check, quality, keep, curated, review, train, heldout, eval
