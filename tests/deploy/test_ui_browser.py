"""The Prefect UI of the test server in a real headless browser (Debian's chromium, no browser download).

Finds the finished runs of the deployed scenario (translate → triggered retrain-and-evaluate), opens
their artifacts (the per-class metrics table, the before/after image grid) and saves screenshots
under the test's tmp dir. Chromium renders the single-page app with a virtual-time budget, then dumps
the DOM or takes a screenshot; nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=20000",
)


class Browser:
    """Headless chromium, a fresh profile per call."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.calls = 0

    def _run(self, url: str, *action: str) -> str:
        self.calls += 1
        profile = self.tmp / f"chrome-profile-{self.calls}"
        done = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise AssertionError(f"chromium exited {done.returncode} on {url}: {done.stderr[-2000:]}")
        return done.stdout

    def text(self, url: str) -> tuple[str, str]:
        """The rendered DOM of ``url`` and its visible text (tags stripped, whitespace collapsed)."""
        dom = self._run(url, "--dump-dom")
        text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
        text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))
        return dom, text

    def text_showing(self, url: str, *needles: str, attempts: int = 6) -> tuple[str, str]:
        """Like :meth:`text`, reloading (a busy machine renders lists late) until every needle shows."""
        for attempt in range(attempts):
            dom, text = self.text(url)
            if all(needle in text for needle in needles):
                return dom, text
            time.sleep(2 * (attempt + 1))  # the UI polls the API; give a loaded server time to answer
        raise AssertionError(f"{url} never showed {needles}; last text: {text[:2000]}")

    def screenshot(self, url: str, name: str) -> Path:
        """A PNG of ``url`` under the tmp dir."""
        path = self.tmp / name
        self._run(url, f"--screenshot={path}")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        return path


@pytest.fixture()
def browser(tmp_path: Path) -> Browser:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return Browser(tmp_path)


def run_artifacts(server: Server, flow_run_id: Any) -> dict[str, Any]:
    """The flow run's artifacts by key."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with server.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in artifacts if a.key}


def test_ui_shows_the_finished_runs_and_their_artifacts(
    deployed: dict[str, Any], prefect_server: Server, browser: Browser
) -> None:
    translate, evaluate = deployed["translate_run"], deployed["evaluate_run"]

    browser.text_showing(f"{prefect_server.url}/runs", translate.name, evaluate.name)

    run_url = f"{prefect_server.url}/runs/flow-run/{evaluate.id}"
    browser.text_showing(run_url, evaluate.name, "Completed", "Artifacts")
    shots = [browser.screenshot(run_url, "evaluate-run.png")]

    metrics = run_artifacts(prefect_server, evaluate.id)["evaluate-segmentation"]
    rows = json.loads(metrics.data) if isinstance(metrics.data, str) else metrics.data
    metrics_url = f"{prefect_server.url}/artifacts/artifact/{metrics.id}"
    first_cell = str(next(iter(rows[0].values())))
    browser.text_showing(metrics_url, "evaluate-segmentation", evaluate.name, first_cell)
    shots.append(browser.screenshot(metrics_url, "metrics-table.png"))

    grid = run_artifacts(prefect_server, translate.id)["translate-sim-translated-preview"]
    grid_url = f"{prefect_server.url}/artifacts/artifact/{grid.id}"
    grid_dom, _ = browser.text_showing(grid_url, translate.name)
    assert re.search(r'<img[^>]+src="data:image/png;base64,', grid_dom), "the image grid is not rendered"
    shots.append(browser.screenshot(grid_url, "image-grid.png"))

    for shot in shots:
        assert shot.stat().st_size > 10_000, f"{shot} looks blank"
    print("UI screenshots:", *shots, sep="\n  ")
