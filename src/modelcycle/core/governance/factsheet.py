"""The factsheet of one model asset: every fact, two plots, three formats.

``build_factsheet`` gathers identity, lineage (dataset checksums → run → model → endpoints),
params, final metrics and per-epoch history, the model summary, deployments, the stage history and
audit trail, custom facts, and a confusion matrix computed in-process on the first 1,000 test
images through :class:`~modelcycle.core.serving.pipeline.InferencePipeline` (the code the
endpoint runs). ``render`` writes HTML (self-contained: PNGs embedded as base64 data URIs, inline
CSS, no network), Markdown (PNGs in a ``<stem>_files/`` folder beside it) or JSON (every fact, plots as numbers).
Matplotlib draws on its Agg canvas directly, so no GUI backend or global pyplot state is touched.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcycle.core.governance.errors import GovernanceError
from modelcycle.core.state import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.governance.service import Governance

__all__ = ["FORMATS", "build_factsheet", "training_curves_figure", "training_curves_png", "confusion_matrix_png", "evaluate_confusion", "render", "write_factsheet"]

FORMATS = ("html", "md", "json")
EVALUATION_IMAGES = 1000


def evaluate_confusion(model_dir: str | Path, dataset: str, data: Any, limit: int = EVALUATION_IMAGES) -> dict[str, Any]:
    """Confusion matrix of the model in ``model_dir`` on the first ``limit`` test images.

    Returns ``{"images", "unit", "split", "accuracy", "matrix", "classes"}`` (``images`` counts
    the samples; ``unit`` is ``records`` for tabular data), or ``{"error"}`` when the
    model or the data cannot be loaded (a factsheet is still useful without it).
    """
    try:
        import numpy as np

        from modelcycle.core.datasets import load_dataset
        from modelcycle.core.serving.codecs import conform_input
        from modelcycle.core.serving.pipeline import InferencePipeline

        pipeline = InferencePipeline(model_dir)
        settings = data if dataset == data.dataset else None  # the options belong to the configured dataset
        test = load_dataset(dataset, None if settings else data.path, download=False, settings=settings).test.take(limit)
        images = conform_input(np.asarray(test.images, dtype=np.float32), pipeline.manifest.input_schema)
        labels = np.asarray(test.labels, dtype=np.int64)
        predictions = np.concatenate([
            np.asarray(pipeline.predict(images[start:start + 250])).argmax(axis=1)
            for start in range(0, len(images), 250)
        ])
        classes = list(pipeline.manifest.classes)
        k = len(classes)
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (labels, predictions), 1)
        return {
            "images": int(len(labels)),
            "unit": "records" if np.asarray(test.images).ndim == 2 else "images",
            "split": f"{dataset} test[:{len(labels)}]",
            "accuracy": float((predictions == labels).mean()),
            "matrix": matrix.tolist(),
            "classes": classes,
        }
    except Exception as exc:  # noqa: BLE001 - reported in the factsheet instead
        return {"error": f"{type(exc).__name__}: {exc}"}


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def training_curves_figure(history: list[dict[str, Any]], title: str = "") -> Any:
    """Per-epoch train/test loss and accuracy side by side (a note when no history was recorded).

    Accuracy axes span exactly [0, 1], loss axes start at 0; x ticks are the whole epochs. A run
    of one or two epochs (one point per curve) shows each point's value beside its marker, so it
    reads as a result rather than a lone dot; longer runs label each curve's final value.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    few = len(set(epochs)) <= 2
    plotted = False
    for axes, keys in ((loss_axes, (("train_loss", "o-"), ("test_loss", "s--"))),
                       (accuracy_axes, (("test_accuracy", "o-"), ("train_accuracy", "s--")))):
        for key, style in keys:
            points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
            if not points:
                continue
            line = axes.plot(*zip(*points), style, markersize=7, label=key.replace("_", " "), clip_on=False)[0]
            plotted = True
            for x, y in points if few else points[-1:]:  # every value of a short run, else the final one
                shown = f"{y * 100:.1f}%" if "accuracy" in key else f"{y:.3f}"
                axes.annotate(shown, (x, y), textcoords="offset points", xytext=(8, 0 if style[0] == "o" else -10),
                              fontsize=8, color=line.get_color(), va="center")
    for axes, label in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if epochs:
            ticks = sorted(set(epochs))
            axes.set_xticks(ticks)
            axes.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5 + 0.1 * len(ticks))  # room for the values
        if axes.lines:
            axes.legend(loc="best", fontsize=8)
    accuracy_axes.set_ylim(0.0, 1.0)
    loss_axes.set_ylim(bottom=0.0)
    if not plotted:
        loss_axes.text(0.5, 0.5, "no per-epoch history recorded", ha="center", va="center", transform=loss_axes.transAxes)
    loss_axes.set_title("loss per epoch")
    accuracy_axes.set_title("accuracy per epoch")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def training_curves_png(history: list[dict[str, Any]], title: str = "") -> bytes:
    """:func:`training_curves_figure` as PNG bytes."""
    return _png(training_curves_figure(history, title))


def confusion_matrix_png(matrix: list[list[int]], classes: list[str], title: str = "") -> bytes:
    """The confusion matrix as a heat map with the counts written in each cell."""
    from matplotlib.figure import Figure

    k = len(classes)
    figure = Figure(figsize=(5.2, 4.6))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    peak = max((max(row) for row in matrix), default=0) or 1
    for i in range(k):
        for j in range(k):
            value = matrix[i][j]
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=7,
                          color="white" if value > peak * 0.6 else "black")
    axes.set_xticks(range(k), classes, fontsize=8)
    axes.set_yticks(range(k), classes, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or "confusion matrix", fontsize=10)
    return _png(figure)


def build_factsheet(governance: Governance, asset: dict[str, Any], evaluate: bool = True) -> dict[str, Any]:
    """Every fact of ``asset`` as one JSON-ready document.

    Raises:
        ArtifactError: the asset's model (its files or ``model.tar.gz``) fails verification; a
            factsheet never describes a model that changed after training.
    """
    from modelcycle.core.artifacts import modelcycle_version, verify_model

    if asset.get("model_dir") and Path(asset["model_dir"]).is_dir():
        verify_model(Path(asset["model_dir"]))
    store = governance.store
    facts = asset["facts"]
    described = governance.describe(asset)
    use_case = governance.record
    config = governance.use_case.config
    evaluation = (
        evaluate_confusion(asset["model_dir"], facts["dataset"]["name"], config.data)
        if evaluate else {"error": "not evaluated"}
    )
    return {
        "factsheet_version": 1,
        "generated_at": utcnow(),
        "generated_by": governance.who,
        "modelcycle_version": modelcycle_version(),
        "use_case": {k: use_case.get(k) for k in ("id", "name", "description", "directory", "framework", "created_at", "created_by")},
        "asset": {
            "id": asset["id"], "name": asset["name"], "run_id": asset["run_id"], "mlflow_run_id": asset["mlflow_run_id"],
            "framework": asset["framework"], "framework_version": asset["framework_version"], "stage": asset["stage"],
            "created_at": asset["created_at"], "imported_at": asset["imported_at"], "remote": asset.get("remote"),
            "backend": governance.config.backend,
        },
        "identity": facts["identity"],
        "lineage": described["lineage"],
        "dataset": facts["dataset"],
        "params": facts.get("params", {}),
        "hyperparameters": facts.get("hyperparameters", {}),
        "model": facts.get("model", {}),
        "metrics": facts.get("metrics", {}),
        "history": facts.get("history", []),
        "tags": facts.get("tags", {}),
        "preprocessing": facts.get("preprocessing", {}),
        "input_schema": facts.get("input_schema", {}),
        "classes": facts.get("classes", []),
        "model_summary": facts.get("model_summary"),
        "artifacts": facts.get("artifacts", {}),
        "run": facts.get("run", {}),
        "evaluation": evaluation,
        "deployments": described["deployments"],
        "stage_history": described["stage_history"],
        "audit": store.audit_trail(asset_id=asset["id"]),
        "custom_facts": described["custom_facts"],
    }


def _plots(document: dict[str, Any]) -> dict[str, bytes]:
    asset = document["asset"]
    plots = {"training_curves": training_curves_png(document["history"], f"{asset['name']} (run {asset['run_id'][:8]})")}
    evaluation = document["evaluation"]
    if "matrix" in evaluation:
        plots["confusion_matrix"] = confusion_matrix_png(
            evaluation["matrix"], evaluation["classes"],
            f"{evaluation['split']}: accuracy {evaluation['accuracy'] * 100:.2f}%",
        )
    return plots


def pictures_folder(output: Path) -> Path:
    """Where a Markdown factsheet's PNGs go: ``<stem>_files/`` beside it (as browsers save a
    page), so they never litter the use case directory and travel with the page."""
    return output.with_name(f"{output.stem}_files")


def render(document: dict[str, Any], fmt: str, output: Path | None = None) -> tuple[str, dict[str, Path]]:
    """Render ``document`` as ``fmt``; returns the text and any PNG files written beside ``output``."""
    if fmt == "json":
        return json.dumps(document, indent=2, default=str, sort_keys=False) + "\n", {}
    from modelcycle.core.governance.templates import render_html, render_markdown

    plots = _plots(document)
    if fmt == "html":
        images = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii") for name, data in plots.items()}
        return render_html(document, images), {}
    if fmt == "md":
        if output is None:
            raise GovernanceError("a Markdown factsheet needs an output file (its PNGs are written beside it)")
        folder = pictures_folder(output)
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, data in plots.items():
            path = folder / f"{name}.png"
            path.write_bytes(data)
            written[name] = path
        return render_markdown(document, {name: f"{folder.name}/{path.name}" for name, path in written.items()}), written
    raise GovernanceError(f"unknown factsheet format '{fmt}'; choose one of {', '.join(FORMATS)}")


def write_factsheet(governance: Governance, run: str | None = None, fmt: str = "html",
                    output: str | Path | None = None) -> dict[str, Any]:
    """Build and write the factsheet of run ``run`` (default: the deployed or latest asset).

    ``output`` ``"-"`` returns the JSON as ``text`` instead of writing a file. Returns ``{"path",
    "format", "run_id", "asset_id", "images", "evaluation"}`` (or ``{"text", ...}``).

    Raises:
        GovernanceError: an unknown ``fmt``, or ``"-"`` with a format other than JSON.
        AssetNotFoundError: no asset matches ``run``.
    """
    if fmt not in FORMATS:
        raise GovernanceError(f"unknown factsheet format '{fmt}'; choose one of {', '.join(FORMATS)}")
    asset = governance.asset(run)
    document = build_factsheet(governance, asset)
    if output == "-":
        if fmt != "json":
            raise GovernanceError("only --format json can be written to stdout ('-o -')")
        text, _ = render(document, fmt)
        return {"text": text, "format": fmt, "run_id": asset["run_id"], "asset_id": asset["id"], "images": {}}
    suffix = {"html": ".html", "md": ".md", "json": ".json"}[fmt]
    path = Path(output) if output else governance.use_case.directory / f"factsheet-{asset['run_id'][:8]}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    text, images = render(document, fmt, path)
    path.write_text(text)
    return {"path": str(path), "format": fmt, "run_id": asset["run_id"], "asset_id": asset["id"],
            "images": {k: str(v) for k, v in images.items()}, "evaluation": document["evaluation"]}
