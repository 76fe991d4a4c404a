"""``govern`` on a live endpoint, stage moves through the CLI, factsheets, and cleanup."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from governance_fakes import open_use_case, trained_use_case  # noqa: F401 - fixture

from modelcycle.cli import main
from modelcycle.core.governance.service import Governance

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def served(trained_use_case: Path) -> Iterator[Path]:
    """The trained use case; its endpoint (started by the tests) is stopped by pid at the end."""
    from modelcycle.core.lifecycle import UseCase

    try:
        yield trained_use_case
    finally:
        UseCase(trained_use_case).cleanup()


def _cli(directory: Path, database: Path, *argv: str) -> list[str]:
    return ["-C", str(directory), "--set", f"governance.database_url=sqlite:///{database}", *argv]


def test_govern_records_the_deployment_and_moves_the_stage(served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCYCLE_USER", "ops-bot")
    use_case = open_use_case(served, tmp_path / "gov.db")
    endpoint = use_case.deploy()
    result = use_case.govern()
    assert result["backend"] == "local" and result["stage"] == "test" and result["run_id"] == endpoint["run_id"]
    governance = Governance(use_case)
    asset = governance.store.get_asset(result["asset_id"])
    assert asset["run_id"] == endpoint["run_id"] and asset["stage"] == "test"
    [deployment] = governance.store.deployments(asset_id=asset["id"])
    assert deployment["name"] == endpoint["name"] and deployment["url"] == endpoint["url"]
    assert deployment["platform"] == "local" and deployment["framework"] == "pytorch"
    assert deployment["model_data"] == asset["archive"] and Path(deployment["model_data"]).name == "model.tar.gz"
    assert deployment["entry_point"] == "code/inference.py"
    assert deployment["created_at"] == endpoint["started_at"] and deployment["removed_at"] is None
    assert deployment["details"]["status"] == "InService" and deployment["details"]["pid"] == endpoint["pid"]
    [imported, deployed] = governance.store.stage_history(asset["id"])
    assert (deployed["from_stage"], deployed["to_stage"], deployed["who"]) == ("develop", "test", "ops-bot")
    assert endpoint["name"] in deployed["reason"]
    kinds = [n["kind"] for n in governance.describe(asset)["lineage"]["nodes"]]
    assert kinds == ["dataset", "run", "model", "endpoint"]

    assert use_case.govern() == result  # done, and still true: nothing recorded twice
    assert len(governance.store.deployments(asset_id=asset["id"])) == 1

    argv = _cli(served, tmp_path / "gov.db", "govern", "--stage", "operate")
    assert main(argv) == 2
    assert "cannot move from test to operate (ahead, skipping a stage); allowed next stage: validate" in capsys.readouterr().err
    assert use_case.status()["governed"] is True  # a refused move leaves the use case governed

    assert main(_cli(served, tmp_path / "gov.db", "govern", "--stage", "validate", "--reason", "QA sign-off")) == 0
    out = capsys.readouterr().out
    assert f"for deployment [{endpoint['name']}]" in out and "stage: validate   backend: local" in out
    assert main(_cli(served, tmp_path / "gov.db", "govern", "--stage", "test", "--force")) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(_cli(served, tmp_path / "gov.db", "govern", "--stage", "test", "--force", "--reason", "drift found", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "test"
    history = governance.store.stage_history(asset["id"])
    assert [(e["to_stage"], e["reason"], e["forced"]) for e in history[-2:]] == [("validate", "QA sign-off", False), ("test", "drift found", True)]


def test_factsheet_html_markdown_json(served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    use_case = open_use_case(served, tmp_path / "gov.db")
    endpoint = use_case.deploy()
    use_case.govern()  # a fresh store: govern records again
    governance = Governance(use_case)
    asset = governance.asset()
    assert asset["run_id"] == endpoint["run_id"]  # default: the deployed run
    governance.set_fact("owner", "Jane Doe")
    metrics = asset["facts"]["metrics"]
    checksums = asset["dataset_checksums"]

    html_path = tmp_path / "out" / "factsheet.html"
    assert main(_cli(served, tmp_path / "gov.db", "factsheet", "-o", str(html_path))) == 0
    assert f"wrote {html_path}" in capsys.readouterr().out
    html = html_path.read_text()
    assert asset["run_id"] in html and asset["mlflow_run_id"] in html and endpoint["name"] in html
    for name, digest in checksums.items():
        assert name in html and digest in html
    for key in ("test_accuracy", "test_loss", "train_loss"):
        assert f"{metrics[key]:.4f}" in html
    assert html.count('<img alt="') == 2 and html.count('src="data:image/png;base64,') == 2
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        assert base64.b64decode(data).startswith(PNG)
    assert "Jane Doe" in html and "Conv2d" in html and "confusion matrix" in html
    assert not re.search(r"<(link|script)\b", html) and "@import" not in html  # readable offline

    md_path = tmp_path / "out" / "factsheet.md"
    assert main(_cli(served, tmp_path / "gov.db", "factsheet", "--format", "md", "-o", str(md_path))) == 0
    assert capsys.readouterr().out.count("wrote ") == 3  # the page and its two PNGs
    markdown = md_path.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert images == ["factsheet_files/training_curves.png", "factsheet_files/confusion_matrix.png"]
    for image in images:
        assert (md_path.parent / image).read_bytes().startswith(PNG)
    assert sorted(p.name for p in md_path.parent.iterdir()) == ["factsheet.html", "factsheet.md", "factsheet_files"]
    assert asset["run_id"] in markdown and endpoint["name"] in markdown and next(iter(checksums.values())) in markdown

    assert main(_cli(served, tmp_path / "gov.db", "factsheet", "--format", "json", "-o", "-")) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["asset"]["run_id"] == asset["run_id"] and document["asset"]["stage"] == "test"
    assert document["dataset"]["checksums"] == checksums and document["metrics"] == metrics
    assert document["deployments"][0]["name"] == endpoint["name"]
    assert document["custom_facts"]["owner"]["value"] == "Jane Doe"
    evaluation = document["evaluation"]
    assert evaluation["images"] == 1000 and sum(map(sum, evaluation["matrix"])) == 1000
    diagonal = sum(evaluation["matrix"][i][i] for i in range(10))
    assert evaluation["accuracy"] == pytest.approx(diagonal / 1000) and evaluation["accuracy"] > 0.3
    assert {"identity", "lineage", "params", "history", "tags", "preprocessing", "model_summary", "artifacts",
            "stage_history", "audit"} <= set(document)


def test_cleanup_keeps_records_unless_asked(served: Path, tmp_path: Path) -> None:
    use_case = open_use_case(served, tmp_path / "gov.db")
    endpoint = use_case.deploy()
    use_case.govern()
    removed = use_case.cleanup()
    assert removed["serving"] == 1 and "factsheets" not in removed
    governance = Governance(use_case)
    assets = governance.assets()
    assert len(assets) == 2  # records kept
    [deployment] = governance.store.deployments(use_case_id=governance.record["id"])
    assert deployment["name"] == endpoint["name"] and deployment["removed_at"] is not None
    assert governance.store.audit_trail(use_case_id=governance.record["id"], action="deployment.removed")

    use_case.deploy()
    use_case.govern()
    removed = use_case.cleanup(governance=True)  # what 'modelcycle cleanup --governance' calls
    assert removed["serving"] == 1 and removed["factsheets"] == 2
    assert Governance(open_use_case(served, tmp_path / "gov.db")).exists() is False
