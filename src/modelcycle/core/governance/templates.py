"""Jinja2 templates of the factsheet (HTML: inline CSS, system fonts, no network; Markdown)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_html", "render_markdown"]

_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Factsheet · {{ asset.name }}</title>
<style>
:root { --ink:#1d2330; --muted:#5d6677; --line:#dfe3ea; --soft:#f5f7fa; --accent:#0f62fe; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--ink); background:#fff; }
main { max-width:1080px; margin:0 auto; padding:28px 32px 48px; }
header { border-bottom:3px solid var(--accent); padding-bottom:14px; margin-bottom:8px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:18px; margin:30px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:14px; margin:16px 0 6px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.sub { color:var(--muted); }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
td.mono, .node .mono { overflow-wrap:anywhere; word-break:break-word; }
pre { background:var(--soft); border:1px solid var(--line); padding:12px; overflow-x:auto; border-radius:6px; }
table { border-collapse:collapse; width:100%; margin:4px 0 8px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
.kv th { width:30%; }
.grid { display:grid; grid-template-columns:1fr 1fr; gap:20px; }
.stages { display:flex; gap:0; margin:14px 0 4px; }
.stage { flex:1; text-align:center; padding:7px 4px; background:var(--soft); border:1px solid var(--line); color:var(--muted); font-weight:600; text-transform:capitalize; }
.stage.done { background:#d0e2ff; color:#002d9c; }
.stage.current { background:var(--accent); color:#fff; border-color:var(--accent); }
.lineage { display:flex; align-items:stretch; gap:8px; flex-wrap:wrap; }
.node { flex:1; min-width:0; border:1px solid var(--line); border-radius:8px; padding:10px 12px; background:#fff; }
.node .kind { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--accent); font-weight:700; }
.arrow { align-self:center; font-size:22px; color:var(--muted); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; background:#d0e2ff; color:#002d9c; }
.badge.off { background:#eee; color:#666; }
img { max-width:100%; border:1px solid var(--line); border-radius:6px; }
.note { color:var(--muted); font-size:12.5px; }
footer { margin-top:36px; color:var(--muted); font-size:12px; border-top:1px solid var(--line); padding-top:10px; }
@media (max-width: 760px) { .grid { grid-template-columns:1fr; } }
</style>
</head>
<body><main>
<header>
  <h1>{{ asset.name }}</h1>
  <div class="sub">Model factsheet · use case <b>{{ use_case.name }}</b>{% if use_case.description %} — {{ use_case.description }}{% endif %}</div>
  <div class="stages">{% for s in stages %}<div class="stage {{ 'current' if s == asset.stage else ('done' if loop.index0 < stage_index else '') }}">{{ s }}</div>{% endfor %}</div>
  <div class="note">Lifecycle stage <b>{{ asset.stage }}</b> · backend {{ asset.backend }}{% if asset.remote and asset.remote.asset_id %} · IBM AI Factsheets asset <span class="mono">{{ asset.remote.asset_id }}</span> in catalog <span class="mono">{{ asset.remote.catalog_id }}</span>{% endif %}</div>
</header>

<h2>Identity</h2>
<table class="kv">
<tr><th>Model asset id</th><td class="mono">{{ asset.id }}</td></tr>
<tr><th>Run id</th><td class="mono">{{ asset.run_id }}</td></tr>
<tr><th>MLflow run id</th><td class="mono">{{ asset.mlflow_run_id or "—" }}</td></tr>
<tr><th>Job name</th><td class="mono">{{ identity.job_name }}</td></tr>
<tr><th>Framework</th><td>{{ identity.framework }} (plugin {{ identity.framework_version }}){% for name, v in framework_libraries %} · {{ name }} {{ v }}{% endfor %}</td></tr>
<tr><th>Python · modelcycle</th><td>{{ identity.libraries.get("python", "?") }} · {{ identity.modelcycle_version }}</td></tr>
<tr><th>Training platform · capture</th><td>{{ identity.platform or "—" }} · {{ identity.capture }}</td></tr>
<tr><th>Trained at</th><td>{{ when(identity.created_at) }}{% if run.duration_s %} ({{ "%.1f"|format(run.duration_s) }} s){% endif %}</td></tr>
<tr><th>Git commit</th><td class="mono">{{ identity.git_commit or "—" }}</td></tr>
<tr><th>Tracking</th><td class="mono">{{ identity.tracking_uri or "not tracked" }}{% if identity.experiment %} · experiment {{ identity.experiment }}{% endif %}</td></tr>
</table>

<h2>Lineage</h2>
<div class="lineage">
  <div class="node"><div class="kind">Dataset</div><b>{{ dataset.name }}</b><br>
    <span class="note">{{ dataset.train_records }} train · {{ dataset.test_records }} test records · {{ dataset.checksums|length }} files (md5 below)</span></div>
  <div class="arrow">→</div>
  <div class="node"><div class="kind">Training run</div><span class="mono">{{ asset.run_id }}</span><br><span class="note">MLflow {{ asset.mlflow_run_id or "—" }}</span></div>
  <div class="arrow">→</div>
  <div class="node"><div class="kind">Model</div><b>{{ asset.name }}</b><br><span class="mono note">{{ artifacts.archive or artifacts.model_dir }}</span></div>
  <div class="arrow">→</div>
  <div class="node"><div class="kind">Endpoint{{ "s" if deployments|length > 1 }}</div>
    {% for d in deployments %}<b>{{ d.name }}</b> <span class="badge {{ 'off' if d.removed_at }}">{{ "removed" if d.removed_at else "active" }}</span><br><span class="mono note">{{ d.url }}</span><br>{% else %}<span class="note">not deployed</span>{% endfor %}</div>
</div>
<h3>Dataset files</h3>
<table><tr><th>file</th><th>md5</th></tr>{% for file, digest in dataset_files %}<tr><td class="mono">{{ file }}</td><td class="mono">{{ digest }}</td></tr>{% endfor %}{% if dataset_files_more %}<tr><td colspan="2" class="note">… and {{ dataset_files_more }} more files (every md5 is in the JSON factsheet and the model's manifest)</td></tr>{% endif %}</table>

<h2>Training</h2>
<div class="grid">
<div><h3>Parameters</h3>
<table class="kv">{% for key, value in params_rows %}<tr><th class="mono">{{ key }}</th><td class="mono">{{ value }}</td></tr>{% endfor %}</table></div>
<div><h3>Final metrics</h3>
<table class="kv">{% for key, value in metrics.items() %}<tr><th class="mono">{{ key }}</th><td class="num mono">{{ fmt(value) }}</td></tr>{% endfor %}</table>
<h3>Per epoch</h3>
<table><tr><th>epoch</th>{% for key in history_keys %}<th class="mono">{{ key }}</th>{% endfor %}</tr>
{% for row in history %}<tr><td class="num">{{ row.epoch }}</td>{% for key in history_keys %}<td class="num mono">{{ fmt(row.get(key)) }}</td>{% endfor %}</tr>{% else %}<tr><td colspan="4" class="note">no per-epoch history recorded</td></tr>{% endfor %}</table>
<h3>Preprocessing</h3>
<table class="kv"><tr><th>scale</th><td class="mono">{{ preprocessing.scale }}</td></tr><tr><th>mean</th><td class="mono">{{ preprocessing.mean }}</td></tr><tr><th>std</th><td class="mono">{{ preprocessing.std }}</td></tr><tr><th>input</th><td class="mono">{{ input_schema.shape }} {{ input_schema.dtype }} in {{ input_schema.value_range }}</td></tr></table>
</div></div>

<h2>Training curves</h2>
<img alt="training curves: loss and accuracy per epoch" src="{{ images.training_curves }}">

<h2>Evaluation</h2>
{% if images.confusion_matrix %}
<div class="grid"><div><img alt="confusion matrix" src="{{ images.confusion_matrix }}"></div>
<div><table class="kv"><tr><th>data</th><td class="mono">{{ evaluation.split }}</td></tr><tr><th>{{ evaluation.unit or 'images' }}</th><td class="num">{{ evaluation.images }}</td></tr><tr><th>accuracy</th><td class="num mono">{{ fmt(evaluation.accuracy) }}</td></tr></table>
<p class="note">Computed when this factsheet was generated, in-process, through the same inference pipeline the endpoint runs.</p></div></div>
{% else %}<p class="note">No confusion matrix: {{ evaluation.error }}</p>{% endif %}

<h2>Model summary</h2>
{% if model_summary %}<pre>{{ model_summary }}</pre>{% else %}<p class="note">No summary recorded for this run.</p>{% endif %}

<h2>Deployments</h2>
<table><tr><th>endpoint</th><th>platform</th><th>url</th><th>model data</th><th>entry point / image</th><th>deployed</th><th>removed</th></tr>
{% for d in deployments %}<tr><td class="mono">{{ d.name }}</td><td>{{ d.platform }}</td><td class="mono">{{ d.url }}</td><td class="mono">{{ d.model_data }}</td><td class="mono">{{ d.entry_point }}{% if d.image %}<br>{{ d.image }}{% endif %}</td><td>{{ when(d.created_at or d.recorded_at) }}</td><td>{{ when(d.removed_at) }}</td></tr>
{% else %}<tr><td colspan="7" class="note">not deployed</td></tr>{% endfor %}</table>

<h2>Lifecycle and audit trail</h2>
<h3>Stage history</h3>
<table><tr><th>when</th><th>who</th><th>from</th><th>to</th><th>why</th></tr>
{% for e in stage_history %}<tr><td>{{ when(e.at) }}</td><td>{{ e.who }}</td><td>{{ e.from_stage or "—" }}</td><td><b>{{ e.to_stage }}</b>{% if e.forced %} <span class="badge">forced</span>{% endif %}</td><td>{{ e.reason or "" }}</td></tr>{% endfor %}</table>
<h3>Audit trail</h3>
<table><tr><th>when</th><th>who</th><th>action</th><th>details</th></tr>
{% for e in audit %}<tr><td>{{ when(e.at) }}</td><td>{{ e.who }}</td><td class="mono">{{ e.action }}</td><td class="mono">{% if e.from_stage or e.to_stage %}{{ e.from_stage or "—" }} → {{ e.to_stage }} {% endif %}{{ e.reason or "" }} {{ brief(e.details) }}</td></tr>{% endfor %}</table>

<h2>Custom facts</h2>
<table><tr><th>fact</th><th>value</th><th>set by</th><th>when</th></tr>
{% for key, f in custom_facts.items() %}<tr><td class="mono">{{ key }}</td><td>{{ f.value }}</td><td>{{ f.who }}</td><td>{{ when(f.at) }}</td></tr>{% else %}<tr><td colspan="4" class="note">none (modelcycle facts set KEY VALUE)</td></tr>{% endfor %}</table>

<h2>Artifacts and environment</h2>
<table class="kv">
{% for key, value in artifacts.items() %}<tr><th>{{ key }}</th><td class="mono">{{ value }}</td></tr>{% endfor %}
{% for name, v in identity.libraries.items() %}<tr><th>library {{ name }}</th><td class="mono">{{ v }}</td></tr>{% endfor %}
</table>
<h3>Tags</h3>
<table class="kv">{% for key, value in tags.items() %}<tr><th class="mono">{{ key }}</th><td class="mono">{{ value }}</td></tr>{% else %}<tr><td class="note">none</td></tr>{% endfor %}</table>

<footer>Generated {{ when(generated_at) }} by {{ generated_by }} with modelcycle {{ modelcycle_version }} · factsheet format {{ factsheet_version }} · <span class="mono">modelcycle factsheet --run {{ asset.run_id[:8] }} --format json</span> has every fact.</footer>
</main></body>
</html>
"""

_MARKDOWN = r"""# Factsheet: {{ asset.name }}

Use case **{{ use_case.name }}**{% if use_case.description %} — {{ use_case.description }}{% endif %}

Lifecycle stage: {% for s in stages %}{{ "**" ~ s|upper ~ "**" if s == asset.stage else s }}{{ " → " if not loop.last }}{% endfor %} · backend {{ asset.backend }}{% if asset.remote and asset.remote.asset_id %} · IBM AI Factsheets asset `{{ asset.remote.asset_id }}`{% endif %}

## Identity

| | |
|---|---|
| Model asset id | `{{ asset.id }}` |
| Run id | `{{ asset.run_id }}` |
| MLflow run id | `{{ asset.mlflow_run_id or "—" }}` |
| Job name | `{{ identity.job_name }}` |
| Framework | {{ identity.framework }} (plugin {{ identity.framework_version }}){% for name, v in framework_libraries %}, {{ name }} {{ v }}{% endfor %} |
| Python / modelcycle | {{ identity.libraries.get("python", "?") }} / {{ identity.modelcycle_version }} |
| Trained at | {{ when(identity.created_at) }} |
| Git commit | `{{ identity.git_commit or "—" }}` |

## Lineage

dataset **{{ dataset.name }}** → run `{{ asset.run_id }}` → model `{{ asset.name }}` → {% for d in deployments %}endpoint `{{ d.name }}`{{ " (removed)" if d.removed_at }}{{ ", " if not loop.last }}{% else %}not deployed{% endfor %}

| dataset file | md5 |
|---|---|
{% for file, digest in dataset_files %}| `{{ file }}` | `{{ digest }}` |
{% endfor %}{% if dataset_files_more %}| … and {{ dataset_files_more }} more files | every md5 is in the JSON factsheet and the model's manifest |
{% endif %}
{{ dataset.train_records }} train and {{ dataset.test_records }} test records.

## Training

| parameter | value |
|---|---|
{% for key, value in params_rows %}| `{{ key }}` | `{{ value }}` |
{% endfor %}
| metric | value |
|---|---|
{% for key, value in metrics.items() %}| `{{ key }}` | {{ fmt(value) }} |
{% endfor %}
| epoch |{% for key in history_keys %} {{ key }} |{% endfor %}
|---|{% for key in history_keys %}---|{% endfor %}
{% for row in history %}| {{ row.epoch }} |{% for key in history_keys %} {{ fmt(row.get(key)) }} |{% endfor %}
{% endfor %}
![training curves]({{ images.training_curves }})

## Evaluation

{% if images.confusion_matrix %}Confusion matrix on {{ evaluation.split }} ({{ evaluation.images }} {{ evaluation.unit or 'images' }}): accuracy **{{ fmt(evaluation.accuracy) }}**.

![confusion matrix]({{ images.confusion_matrix }})
{% else %}No confusion matrix: {{ evaluation.error }}
{% endif %}
## Model summary

{% if model_summary %}```
{{ model_summary }}
```{% else %}No summary recorded.{% endif %}

## Deployments

| endpoint | platform | url | model data | entry point / image | deployed | removed |
|---|---|---|---|---|---|---|
{% for d in deployments %}| `{{ d.name }}` | {{ d.platform }} | {{ d.url }} | `{{ d.model_data }}` | `{{ d.entry_point }}`{% if d.image %} `{{ d.image }}`{% endif %} | {{ d.created_at or d.recorded_at }} | {{ d.removed_at or "—" }} |
{% endfor %}
## Lifecycle and audit trail

| when | who | from | to | why |
|---|---|---|---|---|
{% for e in stage_history %}| {{ when(e.at) }} | {{ e.who }} | {{ e.from_stage or "—" }} | **{{ e.to_stage }}**{{ " (forced)" if e.forced }} | {{ e.reason or "" }} |
{% endfor %}
| when | who | action | details |
|---|---|---|---|
{% for e in audit %}| {{ when(e.at) }} | {{ e.who }} | `{{ e.action }}` | {{ e.reason or "" }} {{ brief(e.details) }} |
{% endfor %}
## Custom facts

| fact | value | set by | when |
|---|---|---|---|
{% for key, f in custom_facts.items() %}| `{{ key }}` | {{ f.value }} | {{ f.who }} | {{ when(f.at) }} |
{% endfor %}
---
Generated {{ generated_at }} by {{ generated_by }} with modelcycle {{ modelcycle_version }}.
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _when(stamp: Any) -> str:
    """``2026-11-22T04:54:48.305+00:00`` → ``2026-11-22 04:54:48 UTC``."""
    if not stamp:
        return "—"
    text = str(stamp)
    if text.endswith("+00:00") and "T" in text:
        return text[:19].replace("T", " ") + " UTC"
    return text


def _framework_libraries(libraries: dict[str, str]) -> list[tuple[str, str]]:
    """The framework row's ``(library, version)`` pairs: what the manifest recorded besides
    Python, which is exactly the libraries the framework plugin declares in
    ``framework_info().libraries`` (the trainer records only those)."""
    return [(name, value) for name, value in libraries.items() if name != "python"]


def _brief(details: Any) -> str:
    if not details:
        return ""
    if isinstance(details, dict):
        return ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, "", {}, []))
    return str(details)


#: Dataset files listed by the HTML and Markdown factsheets (an image folder has thousands; the
#: JSON factsheet and the manifest keep every checksum).
LISTED_FILES = 20


def _context(document: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    from modelcycle.core.governance.stages import STAGES

    history = document.get("history") or []
    keys = [k for k in ("train_loss", "test_loss", "test_accuracy", "train_accuracy") if any(k in row for row in history)]
    keys += sorted({k for row in history for k in row} - set(keys) - {"epoch"})
    identity = document.get("identity") or {}
    libraries = identity.get("libraries") or {}
    params = document.get("params") or {}
    checksums = list(((document.get("dataset") or {}).get("checksums") or {}).items())
    if not params:  # not tracked: the manifest's hyperparameters and model options
        params = {**document.get("hyperparameters", {}), **{f"model.{k}": v for k, v in document.get("model", {}).items()}}
    return {
        **document,
        "images": images,
        "stages": STAGES,
        "stage_index": STAGES.index(document["asset"]["stage"]),
        "history_keys": keys,
        "dataset_files": checksums[:LISTED_FILES],
        "dataset_files_more": max(len(checksums) - LISTED_FILES, 0),
        "params_rows": sorted(params.items()),
        "fmt": _fmt,
        "brief": _brief,
        "when": _when,
        "framework_libraries": _framework_libraries(libraries),
    }


def render_html(document: dict[str, Any], images: dict[str, str]) -> str:
    """The HTML page; ``images`` maps plot names to ``data:image/png;base64,...`` URIs."""
    from jinja2 import Environment

    environment = Environment(autoescape=True, trim_blocks=False)
    return environment.from_string(_HTML).render(**_context(document, images))


def render_markdown(document: dict[str, Any], images: dict[str, str]) -> str:
    """The Markdown page; ``images`` maps plot names to PNG file names beside it."""
    from jinja2 import Environment

    environment = Environment(autoescape=False, keep_trailing_newline=True)
    return environment.from_string(_MARKDOWN).render(**_context(document, images))
