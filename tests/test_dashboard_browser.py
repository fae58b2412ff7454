"""The dashboard in a real headless browser: Debian's chromium driven by Selenium through
/usr/bin/chromedriver (both from apt: .ci/run installs them; no browser is ever downloaded).

One cluster, one dashboard and one browser for the module. The page must show the leader,
every view must fill from the cluster, a write made through the client must appear in the live
stream, and the leader's SIGKILL must show as a replica down and a new leader (the stream going
on, gap-free, on another replica). The run views are checked on a real chaos run's folder and a
real experiment report. Every wait polls with a generous deadline; no timing is asserted.

Each view's screenshot is written to a temporary folder, or to the folder named by
``QUORUMBOARD_DASHBOARD_SHOTS`` (``docs/`` refreshes the README's, but for the experiment's,
which shows a real sweep rather than this module's hand-built records)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from quorumboard.agents.study.report import write_report
from quorumboard.consensus import LocalCluster
from quorumboard.consensus.dashboard.app import create_app
from quorumboard.consensus.dashboard.runs import open_run
from quorumboard.consensus.dashboard.serve import DashboardServer, live_app
from quorumboard.consensus.testing import Scenario, run_chaos
from tests.conftest import wait_until
from tests.pngcheck import read_png
from tests.test_report import sweep_records, write_results

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEADLINE_S = 45.0
"""Generous: the machine is shared, and a failover takes elections."""


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("QUORUMBOARD_DASHBOARD_SHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
                    "(.ci/run does)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("dashboard"),
                      log_level="warning") as c:
        yield c


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Future[Path], Future[Path]]]:
    """Two run folders, made on a thread from the module's start, beside the live tests (they
    mostly wait), one after the other (both draw with matplotlib): a real (short) chaos run,
    a leader killed and restarted under a workload; and the real report of a sweep's
    results (tests/test_report.py's hand-built records)."""
    out = tmp_path_factory.mktemp("chaos") / "run"
    sweep = tmp_path_factory.mktemp("experiment") / "exp1"
    scenario = Scenario(replicas=3, clients=3, rate=60.0, duration_s=1.5, keys=3,
                        nemesis=["kill"], interval_s=0.4, fault_s=0.6, seed=7,
                        check_time_limit_s=20.0)

    def chaos() -> Path:
        report = run_chaos(scenario, out)
        assert report.verdict == "valid", report.problems
        return out

    def experiment() -> Path:
        write_report(write_results(sweep, sweep_records()))
        return sweep

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-folders") as pool:
        futures = (pool.submit(chaos), pool.submit(experiment))
        try:
            yield futures
        finally:
            for future in futures:  # every process of the run stopped before moving on
                future.result(timeout=300)


@pytest.fixture(scope="module")
def page(cluster: LocalCluster, runs: tuple[Future[Path], Future[Path]]) -> Iterator[str]:
    cluster.wait_for_leader()
    with DashboardServer(live_app(cluster.endpoints), port=0) as server:
        yield server.url


def _js(driver: webdriver.Chrome, script: str) -> Any:
    return driver.execute_script(script)


def _until(driver: webdriver.Chrome, script: str, what: str) -> Any:
    """Poll ``script`` (JavaScript returning a value) in the page until it is truthy."""
    return wait_until(lambda: _js(driver, script), timeout_s=DEADLINE_S, interval_s=0.1,
                      what=what)


def _cells(driver: webdriver.Chrome, selector: str) -> list[str] | None:
    """The texts of the cells of the table row at ``selector`` (``None``: no such row)."""
    found: list[str] | None = driver.execute_script(
        "const row = document.querySelector(arguments[0]); "
        "return row && [...row.cells].map(c => c.textContent)", selector)
    return found


def _shot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    path = folder / f"dashboard-{name}.png"
    assert driver.save_screenshot(str(path)), path
    width, height, pixels = read_png(path.read_bytes())
    assert width >= 800 and height >= 500 and pixels.std() > 5, f"{path} looks blank"


def _leader_shown(driver: webdriver.Chrome, cluster: LocalCluster) -> str:
    """Wait until the page shows the replica that leads now (asked again at every poll: a
    loaded machine may see an election meanwhile); returns its endpoint."""
    def agreed() -> str | None:
        shown = _js(driver, "return document.getElementById('leader')?.textContent")
        leader = cluster.leader()
        return shown if leader is not None and shown == cluster.endpoints[leader] else None

    return wait_until(agreed, timeout_s=DEADLINE_S, interval_s=0.1, what="the leader shown")


def _open(driver: webdriver.Chrome, url: str, view: str) -> None:
    driver.get(f"{url}#{view}")
    _until(driver, f"return !document.getElementById('view-{view}').hidden", f"view {view}")


def test_page_shows_the_leader(browser: webdriver.Chrome, page: str, cluster: LocalCluster,
                               shots: Path) -> None:
    _open(browser, page, "replicas")
    leader = _leader_shown(browser, cluster)
    _until(browser, "return document.querySelectorAll('tr[data-up=true]').length === 3",
           "three replicas up")
    assert _js(browser, f"return document.querySelector('tr[data-endpoint=\"{leader}\"]')"
                        ".dataset.role") == "leader"
    _shot(browser, shots, "replicas")


def test_keys_claims_and_policies_views(browser: webdriver.Chrome, page: str,
                                        cluster: LocalCluster, shots: Path) -> None:
    planner, coder = cluster.board(agent="planner"), cluster.board(agent="coder")
    planner.set_policy("team/notes/", "last-writer-wins")
    planner.set_policy("team/tally/", "merge", kind="counter")
    planner.put("team/plan", {"steps": ["parse", "solve", "check"]})
    task = coder.claim("team/tasks/solve", ttl=60.0, value={"status": "working"})
    coder.put("team/notes/solve", "tried the substitution first", lease=task)
    planner.claim("team/tasks/check", ttl=45.0)
    planner.put("team/tally/done", 1)

    _open(browser, page, "keys")
    box = browser.find_element(By.ID, "keys-prefix")
    box.clear()
    box.send_keys("team/", Keys.ENTER)
    wait_until(lambda: _cells(browser, '#view-keys tr[data-key="team/notes/solve"]'),
               timeout_s=DEADLINE_S, what="the keys under team/")
    row = _cells(browser, '#view-keys tr[data-key="team/plan"]')
    assert row is not None and row[:3] == ["team/plan", "1", "planner"] and "solve" in row[5], row
    _shot(browser, shots, "keys")

    _open(browser, page, "claims")
    _until(browser, "return document.querySelector('tr[data-claim=\"team/tasks/check\"]')",
           "the claims")
    claim = _cells(browser, 'tr[data-claim="team/tasks/solve"]')
    assert claim is not None and claim[:4] == ["team/tasks/solve", "coder", str(task.fence), str(task.lease)], claim
    _until(browser, f"return document.querySelector('tr[data-lease=\"{task.lease}\"]')",
           "the claim's lease")
    lease = _cells(browser, f'tr[data-lease="{task.lease}"]')
    assert lease is not None
    left = float(lease[3])
    assert 0 < left <= 60.0
    _shot(browser, shots, "claims")

    _open(browser, page, "policies")
    _until(browser, "return document.querySelector('tr[data-prefix=\"team/tally/\"]')",
           "the policy bindings")
    tally = _cells(browser, 'tr[data-prefix="team/tally/"]')
    assert tally == ["team/tally/", "merge", '{"kind": "counter"}'], tally
    _shot(browser, shots, "policies")


def test_a_write_appears_in_the_live_stream(browser: webdriver.Chrome, page: str,
                                            cluster: LocalCluster, shots: Path) -> None:
    _open(browser, page, "events")
    _until(browser, "return document.getElementById('stream-state').textContent === 'live'",
           "the stream open")
    board = cluster.board(agent="writer")
    for i in range(3):
        board.put(f"team/live/{i}", {"draft": i})
    _until(browser, "return document.querySelector('#events tr[data-key=\"team/live/2\"]')",
           "the write in the live stream")
    keys = _js(browser, "return [...document.querySelectorAll('#events tr')]"
                        ".map(r => r.dataset.key)")
    assert [k for k in keys if k.startswith("team/live/")] == [
        "team/live/2", "team/live/1", "team/live/0"]  # newest first, each once
    _shot(browser, shots, "events")


def test_leader_kill_shows_down_and_a_new_leader(browser: webdriver.Chrome, page: str,
                                                 cluster: LocalCluster, shots: Path) -> None:
    """SIGKILL the leader: its row shows down, another replica leads, and a write after the
    kill still reaches the stream (its watch resumed on a live replica, no event lost)."""
    _open(browser, page, "replicas")
    old = _leader_shown(browser, cluster)
    cluster.kill(cluster.endpoints.index(old))
    _until(browser, f"return document.querySelector('tr[data-endpoint=\"{old}\"]')"
                    "?.dataset.up === 'false'", "the killed leader shown down")
    new = _until(browser, "const t = document.getElementById('leader')?.textContent; "
                          f"return t && t !== 'none' && t !== '{old}' && t", "a new leader")
    assert new in cluster.endpoints and new != old
    _shot(browser, shots, "failover")
    board = cluster.board(agent="writer", timeout_s=30.0)
    for i in range(3):
        board.put(f"team/after/{i}", i)
    _open(browser, page, "events")  # the same page: the hash changes, the stream stays
    _until(browser, "return document.querySelector('#events tr[data-key=\"team/after/2\"]')",
           "a write after the kill in the stream")
    keys = set(_js(browser, "return [...document.querySelectorAll('#events tr')]"
                            ".map(r => r.dataset.key)"))
    assert {f"team/after/{i}" for i in range(3)} <= keys


def test_chaos_run_view(browser: webdriver.Chrome, runs: tuple[Future[Path], Future[Path]],
                        shots: Path) -> None:
    with DashboardServer(create_app(open_run(runs[0].result(timeout=300))), port=0) as server:
        _open(browser, server.url, "chaos")
        _until(browser, "return document.getElementById('verdict')?.textContent === 'valid'",
               "the verdict")
        _until(browser, "const img = document.getElementById('timeline'); "
                        "return img && img.complete && img.naturalWidth > 0", "the timeline")
        labels = _js(browser, "return [...document.querySelectorAll('#view-chaos tbody')[0]"
                              ".rows].map(r => r.cells[0].textContent)")
        assert labels[:2] == ["total", "no fault"] and any(x.startswith("kill") for x in labels)
        _shot(browser, shots, "chaos")


def test_experiment_view(browser: webdriver.Chrome, runs: tuple[Future[Path], Future[Path]],
                         shots: Path) -> None:
    with DashboardServer(create_app(open_run(runs[1].result(timeout=300))), port=0) as server:
        _open(browser, server.url, "experiment")
        _until(browser, "return document.querySelectorAll('#view-experiment table').length",
               "the report's tables")
        _until(browser, "const imgs = [...document.querySelectorAll('#view-experiment img')]; "
                        "return imgs.length >= 5 && imgs.every(i => i.complete && "
                        "i.naturalWidth > 0)", "the report's plots")
        assert "Sweep report: exp1" in _js(browser, "return document.getElementById('headline')"
                                                    ".textContent")
        _shot(browser, shots, "experiment")
