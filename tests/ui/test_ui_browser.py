"""The dashboard in a real browser: headless Chromium, driven by Selenium, on ``modelcycle ui``
serving two trained use cases (PyTorch and Keras; see ``conftest.py``).

Each test acts as a user does — clicks links, headers and buttons, fills in forms — and checks the
outcome on the page and in the stores behind it. The last test writes a screenshot of every page
(to ``$MODELCYCLE_UI_SCREENSHOTS`` when set — ``docs/images`` refreshes the README's — else to a
temporary directory).
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelcycle.core.lifecycle import UseCase

from conftest import PYTORCH_EPOCHS, REPO, Dashboard, UiServer

#: read at import: the suite's autouse fixture removes MODELCYCLE_* variables inside tests
SCREENSHOTS = os.environ.get("MODELCYCLE_UI_SCREENSHOTS")
WAIT_S = 60.0
ACCURACY = "metrics.test_accuracy"
PAGES = ("overview", "runs", "run", "model", "endpoint", "monitoring")


def wait_for(browser: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    """``condition(browser)``'s first truthy value, polled until ``timeout``; fails naming ``what``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def checked(driver: Any) -> Any:
        if not css(driver, "nav") and "Internal Server Error" in driver.page_source:
            raise AssertionError(f"{driver.current_url} answered Internal Server Error (waiting for {what}); "
                                 "the end of the server's error output follows in this report")
        return condition(driver)

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2).until(checked)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} on {browser.current_url}")


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def one(browser: Any, selector: str) -> Any:
    found = css(browser, selector)
    assert len(found) == 1, f"expected one {selector!r} on {browser.current_url}, found {len(found)}"
    return found[0]


def open_page(browser: Any, url: str) -> None:
    """Load ``url`` and wait until the document (and its scripts) finished loading."""
    browser.get(url)
    wait_for(browser, lambda b: b.execute_script("return document.readyState") == "complete", "the page to load")


def overview_rows(browser: Any) -> dict[str, Any]:
    return {row.get_attribute("data-use-case"): row for row in css(browser, "#overview tr.use-case")}


def accuracy_column(browser: Any) -> list[tuple[str, float]]:
    """``(run id, accuracy)`` of the runs table's rows, in the order shown."""
    rows = []
    for row in css(browser, "#runs tr.run"):
        value = row.find_element("css selector", f'td[data-key="{ACCURACY}"]').get_attribute("data-value")
        rows.append((row.get_attribute("data-run-id"), float(value)))
    return rows


def assert_order(shown: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """The same runs in the same order, with the same accuracies."""
    assert [run for run, _ in shown] == [run for run, _ in expected], shown
    assert [value for _, value in shown] == pytest.approx([value for _, value in expected])


def epoch_series(use_case: UseCase, mlflow_run_id: str) -> dict[str, list[int]]:
    """The run's per-epoch metric series straight from MLflow: ``{metric: [epochs]}``."""
    from modelcycle.core.tracking import default_tracking_uri, mlflow_client, wait_for_pending_writes

    wait_for_pending_writes(use_case.work_dir)
    client = mlflow_client(default_tracking_uri(use_case.work_dir))
    series = {}
    for key in client.get_run(mlflow_run_id).data.metrics:
        steps = sorted(m.step for m in client.get_metric_history(mlflow_run_id, key) if m.step >= 1)
        if steps:
            series[key] = steps
    return series


def test_overview_shows_both_use_cases_with_their_frameworks(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    open_page(browser, ui_server.url)
    rows = overview_rows(browser)
    assert {name: row.find_element("css selector", "td.framework").text for name, row in rows.items()} == {
        dashboard.pytorch_name: "pytorch", dashboard.keras_name: "keras"}
    for name, row in rows.items():
        badges = {b.get_attribute("data-badge") for b in row.find_elements("css selector", "td.badges .badge")}
        assert badges == {"trained", "deployed", "governed", "monitored"}, name
        assert row.find_element("css selector", "td.evaluation").get_attribute("data-status") in ("none", "pass", "violation")
    endpoint = UseCase(dashboard.pytorch).endpoint()
    assert endpoint is not None and endpoint["name"] in rows[dashboard.pytorch_name].find_element("css selector", "td.endpoint").text
    assert css(browser, ".error-card") == []


def test_runs_sort_by_accuracy(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    open_page(browser, ui_server.url)
    overview_rows(browser)[dashboard.pytorch_name].find_element("css selector", "a.use-case-link").click()
    wait_for(browser, lambda b: css(b, "#runs tr.run"), "the runs table")
    tracked = {r["run_id"]: r["metrics"]["test_accuracy"] for r in UseCase(dashboard.pytorch).runs()}
    assert len(tracked) == 2 and len(set(tracked.values())) == 2, tracked  # two runs, told apart by accuracy
    shown = accuracy_column(browser)
    assert dict(shown) == pytest.approx(tracked)

    header = one(browser, f'#runs th[data-sort="{ACCURACY}"]')
    header.click()  # metrics sort descending on the first click
    descending = sorted(tracked.items(), key=lambda item: -item[1])
    assert_order(accuracy_column(browser), descending)
    header.click()  # and toggle
    assert_order(accuracy_column(browser), descending[::-1])


def test_best_run_draws_one_point_per_epoch_and_series(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    use_case = UseCase(dashboard.pytorch)
    best = use_case.runs(sort="test_accuracy")[0]
    open_page(browser, f"{ui_server.url}use-cases/{dashboard.pytorch_name}/runs")
    one(browser, f'#runs th[data-sort="{ACCURACY}"]').click()
    css(browser, "#runs tr.run")[0].find_element("css selector", "a.run-link").click()
    wait_for(browser, lambda b: b.current_url.rstrip("/").endswith(best["run_id"]), "the best run's page")

    series = epoch_series(use_case, best["mlflow_run_id"])
    assert set(series) >= {"train_loss", "test_loss", "test_accuracy"}, series
    assert all(steps == list(range(1, PYTORCH_EPOCHS + 1)) for steps in series.values()), series
    expected = PYTORCH_EPOCHS * len(series)
    wait_for(browser, lambda b: len(css(b, "#curves path.point")) >= expected, f"{expected} drawn points in #curves")
    assert len(css(browser, "#curves .scatterlayer .trace")) == len(series)
    assert len(css(browser, "#curves path.point")) == expected


def test_promote_with_a_reason_shows_it_in_the_audit_trail(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    from selenium.webdriver.support.ui import Select

    reason = f"reviewed in the browser test {uuid.uuid4().hex[:8]}"
    open_page(browser, f"{ui_server.url}use-cases/{dashboard.pytorch_name}/runs")
    one(browser, 'nav a[data-page="model"]').click()
    form = wait_for(browser, lambda b: css(b, "form#promote"), "the promote form")[0]
    assert reason not in [cell.text for cell in css(browser, "#audit tr.audit-entry td.reason")]
    Select(form.find_element("css selector", 'select[name="stage"]')).select_by_value("validate")
    form.find_element("css selector", 'input[name="reason"]').send_keys(reason)
    form.find_element("css selector", '[type="submit"]').click()

    wait_for(browser, lambda b: reason in [c.text for c in css(b, "#audit tr.audit-entry td.reason")],
             "the reason in the audit trail")
    assert browser.current_url.rstrip("/").endswith(f"/use-cases/{dashboard.pytorch_name}/model")
    entry = next(row for row in css(browser, "#audit tr.audit-entry") if reason in row.text)
    assert entry.find_element("css selector", "td.who").text and entry.find_element("css selector", "td.when").text
    [asset] = [a for uc in UseCase(dashboard.pytorch).inventory() if uc["name"] == dashboard.pytorch_name
               for a in uc["assets"] if a["run_id"] == UseCase(dashboard.pytorch).endpoint()["run_id"]]
    assert asset["stage"] == "validate"


def test_failed_evaluation_shows_a_violation_on_the_overview(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    open_page(browser, ui_server.url)
    assert overview_rows(browser)[dashboard.pytorch_name].find_element(
        "css selector", "td.evaluation").get_attribute("data-status") != "violation"
    use_case = UseCase(dashboard.pytorch)
    assert use_case.log_payload(samples=200)["stored"] == 200
    assert use_case.log_feedback(samples=100)["feedback_records"] == 100

    open_page(browser, f"{ui_server.url}use-cases/{dashboard.pytorch_name}/monitoring")
    one(browser, "form#evaluate-now").find_element("css selector", '[type="submit"]').click()
    violations = wait_for(browser, lambda b: css(b, "tr.violation"), "a violation row on the monitoring page")
    [accuracy_row] = [row for row in violations if "quality" in row.text and "accuracy" in row.text]
    assert "lower_limit 0.999" in accuracy_row.text  # the limit, not the measured value
    [quality] = [m for m in use_case.evaluations() if m["monitor"] == "quality"]
    assert [v["metric_id"] for v in quality["violations"]] == ["accuracy"] and quality["metrics"]["accuracy"] < 0.999

    one(browser, 'nav a[data-page="overview"]').click()
    rows = wait_for(browser, lambda b: overview_rows(b) or None, "the overview")
    assert rows[dashboard.pytorch_name].find_element("css selector", "td.evaluation").get_attribute("data-status") == "violation"
    assert rows[dashboard.keras_name].find_element("css selector", "td.evaluation").get_attribute("data-status") == "none"


def test_endpoint_request_count_grows_while_requests_are_sent(browser: Any, ui_server: UiServer, dashboard: Dashboard) -> None:
    open_page(browser, f"{ui_server.url}use-cases/{dashboard.pytorch_name}/endpoint")
    count = one(browser, "#request-count")
    before = int(count.text)
    browser.execute_script("window.__still_the_same_page = true;")  # a reload would drop it
    use_case = UseCase(dashboard.pytorch)
    sent = 0
    for _ in range(3):
        for _ in range(4):
            use_case.score(samples=1)
            sent += 1
        wait_for(browser, lambda b: int(count.text) >= before + sent, f"#request-count to reach {before + sent}")
        assert int(count.text) == before + sent  # scoring requests only, each counted once
    assert browser.execute_script("return window.__still_the_same_page === true;")


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_screenshot_of_every_page(browser: Any, ui_server: UiServer, dashboard: Dashboard, tmp_path: Path) -> None:
    """A screenshot of each page once its charts are drawn (the README shows them)."""
    target = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    if not target.is_absolute():
        target = REPO / target
    target.mkdir(parents=True, exist_ok=True)
    best = UseCase(dashboard.pytorch).runs(sort="test_accuracy")[0]["run_id"]
    base = f"{ui_server.url}use-cases/{dashboard.pytorch_name}"
    pages = {
        "overview": (ui_server.url, "#overview tr.use-case"),
        "runs": (f"{base}/runs", "#runs tr.run"),
        "run": (f"{base}/runs/{best}", "#curves path.point"),
        "model": (f"{base}/model", "#lineage .main-svg"),
        "endpoint": (f"{base}/endpoint", "#recent-requests"),
        "monitoring": (f"{base}/monitoring", "#quality-chart .main-svg"),
    }
    assert tuple(pages) == PAGES
    heights = {}
    try:
        for page, (url, ready) in pages.items():
            open_page(browser, url)
            wait_for(browser, lambda b: css(b, ready), f"{ready} on the {page} page")
            # the whole page (up to 2,400 px), not only what the 1280×900 window shows
            heights[page] = min(int(browser.execute_script("return document.documentElement.scrollHeight;")), 2400)
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": heights[page], "deviceScaleFactor": 1, "mobile": False})
            assert browser.save_screenshot(str(target / f"ui-{page}.png"))
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for page in PAGES:
        assert _png_size(target / f"ui-{page}.png") == (1280, heights[page]), page
