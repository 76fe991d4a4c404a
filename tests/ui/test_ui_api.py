"""``modelcycle ui`` over real use cases: a trained MNIST one (MLflow runs, inventory), an
untrained one and a corrupt one. Pages carry the DOM contract the browser tests rely on, the API
returns what the CLI's ``--json`` prints, POSTs need the CSRF token and the dashboard's own
origin, a token gates everything beyond loopback, and the viewer never takes a use case's lock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from html import unescape as html_text
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SMALL, isolated_module_env, stop_deployed, write_use_case

MODELCYCLE = Path(sys.executable).parent / "modelcycle"
NAME = "ui-small"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Path]:
    """``<root>/trained`` (one 1-epoch MNIST run), ``<root>/group/untrained`` and
    ``<root>/broken`` (a half-written modelcycle.yaml)."""
    with isolated_module_env(tmp_path_factory, data_dir):
        from modelcycle.core.lifecycle import UseCase

        base = tmp_path_factory.mktemp("ui")
        strict = {"quality": {"thresholds": [{"metric_id": "accuracy", "type": "lower_limit", "value": 0.999}]}}
        trained = write_use_case(base / "trained", name=NAME, monitoring=strict, **SMALL)
        UseCase(trained).train()
        write_use_case(base / "group" / "untrained", name="ui-untrained", **SMALL)
        (base / "broken").mkdir()
        (base / "broken" / "modelcycle.yaml").write_text("name: half-written\nframework: [pytorch\n")
        (base / ".venv" / "hidden").mkdir(parents=True)  # skipped by discovery
        write_use_case(base / ".venv" / "hidden", name="never-listed")
        yield base


@pytest.fixture
def client(root: Path) -> Any:
    from fastapi.testclient import TestClient

    from modelcycle.ui.app import create_app

    with TestClient(create_app([root]), base_url="http://testserver") as test_client:
        yield test_client


def _cli_json(*args: str) -> Any:
    result = subprocess.run([str(MODELCYCLE), *args, "--json"], capture_output=True, text=True, timeout=300,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _csrf(client: Any, page: str) -> str:
    html = client.get(page).text
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _figure(html: str, div: str) -> dict[str, Any]:
    return json.loads(re.search(rf'data-figure-for="{div}">(.*?)</script>', html, re.S).group(1))


# -- pages and the DOM contract --------------------------------------------------------------
def test_overview_lists_the_use_cases_and_an_error_card_for_the_corrupt_one(client: Any, root: Path) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<table id="overview">' in html
    rows = dict(re.findall(r'<tr class="use-case" data-use-case="([^"]+)">(.*?)</tr>', html, re.S))
    assert sorted(rows) == [NAME, "ui-untrained"]  # .venv is never searched
    row = rows[NAME]
    assert '<td class="framework">pytorch</td>' in row
    assert '<td class="stage">develop</td>' in row
    assert re.search(r'data-badge="trained" data-on="true"', row)
    assert re.search(r'data-badge="deployed" data-on="false"', row)
    assert '<td class="endpoint" data-status="none">' in row
    assert '<td class="evaluation" data-status="none">' in row
    assert f'<a class="use-case-link" href="/use-cases/{NAME}/runs">' in row
    assert re.search(r'data-badge="trained" data-on="false"', rows["ui-untrained"])
    card = re.search(r'<div class="error-card" data-path="([^"]+)">(.*?)</div>', html, re.S)
    assert card.group(1) == str(root / "broken")
    assert "modelcycle.yaml" in card.group(2)
    for page in ("overview", "runs", "model", "endpoint", "monitoring"):
        assert f'data-page="{page}"' in html


def test_runs_page_and_run_page_follow_the_contract(client: Any) -> None:
    html = client.get(f"/use-cases/{NAME}/runs").text
    assert '<table id="runs">' in html and 'id="run-filter"' in html
    for key in ("metrics.test_accuracy", "start_time"):
        assert f'data-sort="{key}"' in html
    run_ids = re.findall(r'<tr class="run" data-run-id="([^"]+)"', html)
    assert len(run_ids) == 1
    run_id = run_ids[0]
    accuracy = re.search(r'<td data-key="metrics.test_accuracy" data-value="([^"]+)"', html).group(1)
    assert 0.1 < float(accuracy) <= 1.0
    assert f'<a class="run-link" href="/use-cases/{NAME}/runs/{run_id}">' in html

    page = client.get(f"/use-cases/{NAME}/runs/{run_id}")
    assert page.status_code == 200
    for table in ("params", "tags", "checksums", "artifacts"):
        assert f'<table id="{table}">' in page.text
    assert '<div id="curves"' in page.text
    assert '<form id="deploy-run" method="post"' in page.text
    figure = _figure(page.text, "curves")
    names = {trace["name"] for trace in figure["data"]}
    assert {"train_loss", "test_loss", "test_accuracy"} <= names
    assert all(trace["mode"] == "lines+markers" and trace["x"] == [1] for trace in figure["data"])  # one epoch
    assert "t10k-images-idx3-ubyte.gz" in page.text  # the data set checksums of the manifest
    assert client.get(f"/use-cases/{NAME}/runs/nope").status_code == 404


def test_model_endpoint_and_monitoring_pages_follow_the_contract(client: Any) -> None:
    model = client.get(f"/use-cases/{NAME}/model").text
    for fragment in ('<table id="audit">', '<div id="lineage"', '<form id="promote" method="post"',
                     '<select name="stage">', '<input name="reason" required'):
        assert fragment in model
    assert '<tr class="audit-entry">' in model  # the import into the inventory
    endpoint = client.get(f"/use-cases/{NAME}/endpoint").text
    for fragment in ('id="request-count"', 'id="latency-p50"', 'id="latency-p99"', 'id="error-rate"',
                     'id="recent-requests"', 'id="payload-count"', 'id="feedback-count"'):
        assert fragment in endpoint
    monitoring = client.get(f"/use-cases/{NAME}/monitoring").text
    for fragment in ('id="quality-chart"', 'id="drift-chart"', 'id="confusion-matrix"',
                     '<form id="evaluate-now" method="post"'):
        assert fragment in monitoring
    assert client.get("/use-cases/nope/model").status_code == 404


def test_plotly_js_is_served_locally(client: Any) -> None:
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert "plotly.js" in response.text[:2000]
    assert "cdn" not in client.get("/").text.lower()


def test_a_plugin_panel_shows_on_the_model_page(client: Any) -> None:
    from modelcycle.core.markers import hookimpl

    class Panels:
        @hookimpl
        def dashboard_panels(self, use_case: Any) -> list[dict[str, Any]]:
            return [{"title": "Links", "html": f'<a id="plugin-link" href="https://example.test/{use_case.config.name}">x</a>'},
                    {"title": "A figure", "figure": {"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}}]

    entry = client.app.state.catalog.get(NAME)
    entry.use_case.registry.register(Panels(), name="test-panels")
    try:
        html = client.get(f"/use-cases/{NAME}/model").text
    finally:
        entry.use_case.registry.pm.unregister(name="test-panels")
    sections = re.findall(r'<section class="plugin-panel">(.*?)</section>', html, re.S)
    assert len(sections) == 2
    assert f'<a id="plugin-link" href="https://example.test/{NAME}">' in sections[0]  # trusted HTML, unescaped
    assert _figure(sections[1], "panel-2")["data"][0]["y"] == [1, 2]


# -- the API is the CLI's --json ---------------------------------------------------------------
@pytest.mark.parametrize(("path", "command"), [("status", "status"), ("runs", "runs"), ("inventory", "inventory"),
                                               ("evaluations", "evaluations")])
def test_api_returns_what_the_cli_prints(client: Any, root: Path, path: str, command: str) -> None:
    response = client.get(f"/api/use-cases/{NAME}/{path}")
    assert response.status_code == 200
    assert response.json() == _cli_json("-C", str(root / "trained"), command)


def test_api_lists_use_cases_and_serves_a_run(client: Any, root: Path) -> None:
    listing = client.get("/api/use-cases").json()
    assert sorted(u["name"] for u in listing["use_cases"]) == [NAME, "ui-untrained"]
    assert [e["path"] for e in listing["errors"]] == [str(root / "broken")]
    run_id = client.get(f"/api/use-cases/{NAME}/runs").json()[0]["run_id"]
    run = client.get(f"/api/use-cases/{NAME}/runs/{run_id}").json()
    assert run["run_id"] == run_id and set(run["series"]) >= {"train_loss", "test_accuracy"}
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/use-cases/{name}/status",
                                                                    "/api/use-cases/{name}/endpoint"}


def test_runs_cache_follows_the_mlflow_store(client: Any, root: Path) -> None:
    from modelcycle.core.tracking import default_tracking_uri, mlflow_client

    before = client.get(f"/api/use-cases/{NAME}/runs").json()
    store = mlflow_client(default_tracking_uri(root / "trained" / ".modelcycle"))
    experiment = store.get_experiment_by_name(NAME).experiment_id
    added = store.create_run(experiment, tags={"modelcycle.run_id": "added-by-test"})
    try:
        store.log_metric(added.info.run_id, "test_accuracy", 0.5)
        after = client.get(f"/api/use-cases/{NAME}/runs").json()
    finally:
        store.delete_run(added.info.run_id)
    assert len(after) == len(before) + 1
    assert "added-by-test" in {r["run_id"] for r in after}


# -- safety --------------------------------------------------------------------------------------
def test_posts_need_the_csrf_token_and_the_dashboards_origin(client: Any) -> None:
    page = f"/use-cases/{NAME}/model"
    csrf = _csrf(client, page)
    form = {"stage": "test", "reason": "checked by the test"}
    no_token = client.post(f"{page}/promote", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    wrong = client.post(f"{page}/promote", data={**form, "csrf": "forged"}, headers={"Origin": "http://testserver"},
                        follow_redirects=False)
    assert wrong.status_code == 403
    elsewhere = client.post(f"{page}/promote", data={**form, "csrf": csrf}, headers={"Origin": "http://evil.test"},
                            follow_redirects=False)
    assert elsewhere.status_code == 403 and "evil.test" in elsewhere.text
    for action in (f"/use-cases/{NAME}/monitoring/evaluate", f"/use-cases/{NAME}/runs/x/deploy"):
        assert client.post(action, data={}, headers={"Origin": "http://testserver"}).status_code == 403
    assert '<td class="stage">develop</td>' in client.get("/").text  # nothing moved


def test_promote_with_a_reason_shows_in_the_audit_trail(client: Any) -> None:
    page = f"/use-cases/{NAME}/model"
    csrf = _csrf(client, page)
    headers = {"Origin": "http://testserver"}
    empty = client.post(f"{page}/promote", data={"csrf": csrf, "stage": "test", "reason": " "}, headers=headers)
    assert empty.status_code == 400 and "reason" in empty.text
    moved = client.post(f"{page}/promote", data={"csrf": csrf, "stage": "test", "reason": "passed the review"},
                        headers=headers, follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == page
    html = client.get(page).text
    assert '<b id="stage">test</b>' in html
    assert '<td class="reason">passed the review</td>' in html
    skipped = client.post(f"{page}/promote", data={"csrf": csrf, "stage": "operate", "reason": "too early"},
                          headers=headers)
    assert skipped.status_code == 409 and "validate" in skipped.text  # the transition rules still hold
    again = client.post(f"{page}/promote", data={"csrf": csrf, "stage": "test", "reason": "twice"}, headers=headers)
    assert again.status_code == 409 and "already in stage 'test'" in html_text(again.text)
    assert '<td class="stage">test</td>' in client.get("/").text
    assert client.get(page).text.count('<tr class="audit-entry">') == html.count('<tr class="audit-entry">')


def test_an_action_that_cannot_run_answers_with_its_reason(client: Any) -> None:
    page = f"/use-cases/{NAME}/monitoring"
    refused = client.post(f"{page}/evaluate", data={"csrf": _csrf(client, page)}, headers={"Origin": "http://testserver"})
    assert refused.status_code == 409
    assert "evaluate failed" in refused.text and "modelcycle" in refused.text  # the message says what to run


def test_beyond_loopback_a_token_is_required(root: Path) -> None:
    from modelcycle.core.errors import ConfigError
    from modelcycle.ui.app import create_app

    with pytest.raises(ConfigError, match="--token"):
        create_app([root], host="0.0.0.0")
    result = subprocess.run([str(MODELCYCLE), "ui", str(root), "--host", "0.0.0.0"], capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items() if k != "MODELCYCLE_UI_TOKEN"})
    assert result.returncode == 2
    assert "MODELCYCLE_UI_TOKEN" in result.stderr and result.stdout == ""
    create_app([root], host="0.0.0.0", token="secret")  # with a token it may


def test_with_a_token_pages_need_a_sign_in_and_the_api_a_bearer(root: Path) -> None:
    from fastapi.testclient import TestClient

    from modelcycle.ui.app import create_app

    with TestClient(create_app([root], token="s3cret", host="0.0.0.0"), base_url="http://testserver") as client:
        redirect = client.get(f"/use-cases/{NAME}/runs", follow_redirects=False)
        assert redirect.status_code == 303 and redirect.headers["location"] == f"/login?next=/use-cases/{NAME}/runs"
        assert client.get("/api/use-cases").status_code == 401
        assert client.get("/api/use-cases", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/use-cases", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        csrf = _csrf(client, "/login")
        headers = {"Origin": "http://testserver"}
        denied = client.post("/login", data={"csrf": csrf, "token": "wrong", "next": "/"}, headers=headers)
        assert denied.status_code == 403
        signed = client.post("/login", data={"csrf": csrf, "token": "s3cret", "next": f"/use-cases/{NAME}/runs"},
                             headers=headers, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == f"/use-cases/{NAME}/runs"
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "s3cret" not in signed.headers["set-cookie"]
        assert '<table id="runs">' in client.get(f"/use-cases/{NAME}/runs").text
        assert client.get("/api/use-cases").status_code == 200  # the session cookie serves the page's own calls


def test_a_damaged_state_shows_an_error_card_not_a_500(client: Any, root: Path) -> None:
    state = root / "group" / "untrained" / ".modelcycle" / "state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text('{"version": 1, "stages": {"train": ')
    try:
        overview = client.get("/")
        assert overview.status_code == 200
        assert f'data-path="{state.parent.parent}"' in overview.text and "status --repair" in overview.text
        page = client.get("/use-cases/ui-untrained/endpoint")
        assert page.status_code == 200 and 'class="error-card"' in page.text
        assert client.get("/api/use-cases/ui-untrained/status").status_code == 409
    finally:
        state.unlink()


def test_the_viewer_never_takes_the_use_case_lock(client: Any, root: Path) -> None:
    """Another process holds the lock (as a training run does) while every page and API call
    answers; a viewer that waited for the lock would fail with the 'busy' error instead."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from modelcycle.core.state import StateStore
            with StateStore(__import__("pathlib").Path({str(root / "trained" / ".modelcycle")!r})).lock("test holder"):
                print("held", flush=True)
                time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert holder.stdout.readline().strip() == "held"
        run_id = client.get(f"/api/use-cases/{NAME}/runs").json()[0]["run_id"]
        for path in ("/", f"/use-cases/{NAME}/runs", f"/use-cases/{NAME}/runs/{run_id}", f"/use-cases/{NAME}/model",
                     f"/use-cases/{NAME}/endpoint", f"/use-cases/{NAME}/monitoring",
                     *(f"/api/use-cases/{NAME}/{p}" for p in ("status", "runs", "inventory", "evaluations", "endpoint"))):
            response = client.get(path)
            assert response.status_code == 200, path
            assert f'data-path="{root / "trained"}"' not in response.text, path
            assert "busy" not in response.text, path
        assert holder.poll() is None  # still holding it
    finally:
        holder.kill()
        holder.wait(timeout=30)


# -- the command ------------------------------------------------------------------------------------
def test_ui_command_prints_its_url_and_stops_on_sigterm(root: Path) -> None:
    process = subprocess.Popen([str(MODELCYCLE), "ui", str(root / "trained"), "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"modelcycle ui: serving on (http://127\.0\.0\.1:(\d+)/)\n", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        assert int(match.group(2)) > 0
        with urllib.request.urlopen(match.group(1), timeout=60) as response:
            html = response.read().decode()
        assert f'data-use-case="{NAME}"' in html and "ui-untrained" not in html
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == ""  # exactly one line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_ui_help_stays_light() -> None:
    probe = ("from modelcycle.cli import main\ntry:\n    main(['ui', '--help'])\nexcept SystemExit:\n    pass\n"
             "import sys, json\nprint(json.dumps(sorted(m for m in ('fastapi', 'jinja2', 'plotly', 'uvicorn', 'mlflow')"
             " if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout and "--open" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# -- deploy from the run page, the endpoint's live numbers, evaluate now (last: it deploys) ---------
def test_deploy_a_run_watch_its_requests_and_see_a_violation(client: Any, root: Path) -> None:
    from modelcycle.core.lifecycle import UseCase

    run_id = client.get(f"/api/use-cases/{NAME}/runs").json()[0]["run_id"]
    page = f"/use-cases/{NAME}/runs/{run_id}"
    csrf = _csrf(client, page)
    try:
        deployed = client.post(f"{page}/deploy", data={"csrf": csrf}, headers={"Referer": f"http://testserver{page}"},
                               follow_redirects=False)
        assert deployed.status_code == 303, deployed.text
        assert deployed.headers["location"] == f"/use-cases/{NAME}/endpoint"
        before = client.get(f"/api/use-cases/{NAME}/endpoint").json()
        assert before["endpoint"]["status"] == "InService" and before["endpoint"]["run_id"] == run_id
        UseCase(root / "trained").score(samples=3)
        UseCase(root / "trained").score(samples=2)
        after = client.get(f"/api/use-cases/{NAME}/endpoint").json()
        assert after["metrics"]["requests"] == before["metrics"]["requests"] + 2
        assert after["metrics"]["records"] == before["metrics"]["records"] + 5
        assert after["metrics"]["p50_ms"] > 0 and after["metrics"]["error_rate"] == 0
        html = client.get(f"/use-cases/{NAME}/endpoint").text
        assert '<span id="request-count"' in html
        assert re.search(r'id="request-count"[^>]*>(\d+)<', html).group(1) == str(after["metrics"]["requests"])
        row = re.search(rf'<tr class="use-case" data-use-case="{NAME}">(.*?)</tr>', client.get("/").text, re.S).group(1)
        assert re.search(r'data-badge="deployed" data-on="true"', row)
        assert 'data-status="InService"' in row

        # monitor it, send traffic with feedback, then "run evaluate now": the strict accuracy
        # threshold (0.999) fails, and the overview and monitoring page show the violation
        use_case = UseCase(root / "trained")
        use_case.monitor()
        use_case.log_payload(samples=100)
        use_case.log_feedback(samples=100)
        page = f"/use-cases/{NAME}/monitoring"
        evaluated = client.post(f"{page}/evaluate", data={"csrf": _csrf(client, page)},
                                headers={"Origin": "http://testserver"}, follow_redirects=False)
        assert evaluated.status_code == 303 and evaluated.headers["location"] == page
        overview = client.get("/").text
        row = re.search(rf'<tr class="use-case" data-use-case="{NAME}">(.*?)</tr>', overview, re.S).group(1)
        assert '<td class="evaluation" data-status="violation">' in row
        monitoring = client.get(page).text
        assert re.search(r'<tr class="violation">.*?<td class="metric">accuracy</td>', monitoring, re.S)
        quality = _figure(monitoring, "quality-chart")
        assert any(t["name"] == "accuracy" and len(t["y"]) == 1 for t in quality["data"])
        assert any(t["name"] == "violation" for t in quality["data"])
        matrix = _figure(monitoring, "confusion-matrix")["data"][0]
        assert matrix["type"] == "heatmap" and sum(map(sum, matrix["z"])) == 100
        assert client.get(f"/api/use-cases/{NAME}/endpoint").json()["feedback_count"] == 100
    finally:
        stop_deployed(root / "trained")
