"""The dashboard's FastAPI app: server-rendered pages, the JSON API, and the POST actions.

Pages: ``/`` (overview), ``/use-cases/{name}/runs``, ``.../runs/{run_id}``, ``.../model``,
``.../endpoint``, ``.../monitoring``; actions (POST, CSRF-checked): deploy a run, promote the
model, evaluate now; the API under ``/api`` (documented at ``/docs``) returns the same data as the
CLI's ``--json``. A use case that cannot be read shows as an error card (HTTP 200), never a 500.
"""

from __future__ import annotations

import importlib.util
import logging
from html import escape
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from modelcycle.core.errors import ModelcycleError
from modelcycle.ui import charts, security
from modelcycle.ui.data import Catalog, Entry, ErrorCard, jsonable, mlflow_ready
from modelcycle.ui.tables import number_text

__all__ = ["create_app", "plotly_js"]

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
PAGES = ("overview", "runs", "model", "endpoint", "monitoring")


def plotly_js() -> Path:
    """The installed ``plotly`` package's bundled ``plotly.min.js`` (served locally, no CDN).

    Raises:
        ModelcycleError: plotly is not installed (says how to install it).
    """
    spec = importlib.util.find_spec("plotly")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise ModelcycleError("plotly.js not found: the dashboard draws its charts with the 'plotly' package; "
                          "install it with 'pip install plotly'")


def create_app(roots: list[str | Path], token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The dashboard over the use cases under ``roots``.

    Args:
        roots: directories searched for use cases (a ``modelcycle.yaml`` each).
        token: when set, pages need a sign-in at ``/login`` and the API a bearer token.
        host: the address served; beyond loopback a ``token`` is required.

    Raises:
        ConfigError: ``host`` is not loopback and there is no token.
    """
    security.check_binding(host, token)
    catalog = Catalog([Path(r) for r in roots])
    plotly_path = plotly_js()
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(FILTERS)
    app = FastAPI(title="modelcycle ui", description="The modelcycle dashboard's JSON API: the same data as the "
                  "CLI's status/runs/inventory/evaluations --json.", version="1")
    app.state.catalog = catalog

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        """Sign-in (with a token), and the CSRF cookie every page's forms echo."""
        path = request.url.path
        public = path in ("/login", "/favicon.ico") or path.startswith("/static/")
        if not public and not security.signed_in(token, dict(request.cookies), request.headers.get("authorization")):
            if path.startswith("/api/") or path in ("/docs", "/openapi.json", "/redoc"):
                return JSONResponse({"detail": "sign in: send 'Authorization: Bearer <token>'"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        csrf = request.cookies.get(security.CSRF_COOKIE) or security.new_csrf()
        request.state.csrf = csrf
        response: Response = await call_next(request)
        if request.cookies.get(security.CSRF_COOKIE) != csrf:
            response.set_cookie(security.CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        entries, errors = catalog.scan()
        context.setdefault("use_case", None)
        context.setdefault("page", None)
        current = context["use_case"] or (entries[0].name if entries else None)
        return templates.TemplateResponse(request, template, {
            "csrf": request.state.csrf, "nav_use_case": current, "use_case_names": [e.name for e in entries],
            "signed_in_with_token": bool(token), **context,
        }, status_code=status_code)

    def entry_or_404(name: str) -> Entry:
        entry = catalog.get(name)
        if entry is None:
            raise HTTPException(404, f"no use case named '{name}' under {', '.join(map(str, catalog.roots))}")
        return entry

    def use_case_page(request: Request, name: str, page_name: str, template: str,
                      build: Callable[[Entry], dict[str, Any]]) -> HTMLResponse:
        """A use case's page, or its error card (200) when its data cannot be read."""
        entry = entry_or_404(name)
        try:
            context = build(entry)
        except HTTPException:
            raise
        except Exception as exc:  # a half-written store may fail anywhere: a card, never a 500
            return page(request, "error.html", use_case=name, page=page_name,
                        errors=[_card(entry, exc)])
        return page(request, template, use_case=name, page=page_name, **context)

    def refused(request: Request, message: str, status_code: int = 403) -> HTMLResponse:
        return page(request, "message.html", status_code=status_code, title="refused", message=message)

    async def checked_form(request: Request) -> tuple[dict[str, Any], HTMLResponse | None]:
        form = await _form(request)
        problem = security.csrf_problem(form.get("csrf"), dict(request.cookies), request.headers)
        return form, (refused(request, problem) if problem else None)

    # -- static -----------------------------------------------------------------------------
    @app.get("/static/plotly.min.js", include_in_schema=False)
    def static_plotly() -> FileResponse:
        return FileResponse(plotly_path, media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/static/ui.js", include_in_schema=False)
    def static_ui() -> FileResponse:
        return FileResponse(TEMPLATES / "ui.js", media_type="application/javascript")

    # -- sign-in ----------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", next=security.safe_next(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form, refusal = await checked_form(request)
        if refusal is not None:
            return refusal
        target = security.safe_next(str(form.get("next") or "/"))
        if not token:
            return RedirectResponse(target, status_code=303)
        if not security.signed_in(token, {}, f"Bearer {form.get('token') or ''}"):
            return page(request, "login.html", status_code=403, next=target, error="wrong token")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(security.SESSION_COOKIE, security.session_value(token), httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        entries, errors = catalog.scan()
        rows = []
        for entry in entries:
            try:
                rows.append(catalog.overview_row(entry))
            except Exception as exc:  # one unreadable use case must not hide the others
                errors.append(_card(entry, exc))
        return page(request, "overview.html", page="overview", rows=rows, errors=errors)

    @app.get("/use-cases/{name}/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs_page(request: Request, name: str, compare: list[str] = Query(default=[])) -> HTMLResponse:
        def build(entry: Entry) -> dict[str, Any]:
            from markupsafe import Markup

            table = catalog.runs_table(entry)
            chosen = [c for c in (compare or []) if c][:10]
            rows = table.rows_html
            figure = None
            if chosen:
                for run_id in chosen:  # keep the selection ticked
                    rows = rows.replace(f'name="compare" value="{escape(run_id)}">',
                                        f'name="compare" value="{escape(run_id)}" checked>')
                details = [(d["run_id"][:8], d["series"]) for d in (catalog.run_detail(entry, c) for c in chosen) if d]
                figure = charts.run_curves(details)
            return {"table": table, "rows_html": Markup(rows), "run_count": table.count,
                    "compare_figure": figure, "compared": chosen}

        return use_case_page(request, name, "runs", "runs.html", build)

    @app.get("/use-cases/{name}/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, name: str, run_id: str) -> HTMLResponse:
        def build(entry: Entry) -> dict[str, Any]:
            detail = catalog.run_detail(entry, run_id)
            if detail is None:
                raise HTTPException(404, f"use case '{name}' has no run '{run_id}'")
            return {"run": detail, "figure": charts.run_curves([(detail["run_id"][:8], detail["series"])])}

        return use_case_page(request, name, "runs", "run.html", build)

    @app.get("/use-cases/{name}/model", response_class=HTMLResponse, include_in_schema=False)
    def model_page(request: Request, name: str, error: str | None = None) -> HTMLResponse:
        def build(entry: Entry) -> dict[str, Any]:
            from modelcycle.core.governance.stages import STAGES

            model = catalog.model(entry)
            figure = charts.lineage_figure(model["asset"]["lineage"]) if model["asset"] else None
            return {"model": model, "stages": STAGES, "lineage_figure": figure, "panels": _panels(entry),
                    "action_error": error}

        return use_case_page(request, name, "model", "model.html", build)

    @app.get("/use-cases/{name}/endpoint", response_class=HTMLResponse, include_in_schema=False)
    def endpoint_page(request: Request, name: str) -> HTMLResponse:
        return use_case_page(request, name, "endpoint", "endpoint.html", lambda e: {"data": catalog.endpoint(e)})

    @app.get("/use-cases/{name}/monitoring", response_class=HTMLResponse, include_in_schema=False)
    def monitoring_page(request: Request, name: str) -> HTMLResponse:
        def build(entry: Entry) -> dict[str, Any]:
            evaluations = catalog.evaluations(entry)
            violations = [{"time": m.get("time"), "monitor": m.get("monitor"), **v,
                           "measured": (m.get("metrics") or {}).get(v.get("metric_id"))}
                          for m in evaluations for v in (m.get("violations") or [])]
            return {
                "evaluations": evaluations, "violations": violations[::-1],
                "quality_figure": charts.monitor_chart(evaluations, "quality", "quality over time"),
                "drift_figure": charts.monitor_chart(evaluations, "drift", "drift over time"),
                "confusion_figure": charts.confusion_figure(evaluations),
            }

        return use_case_page(request, name, "monitoring", "monitoring.html", build)

    # -- actions ----------------------------------------------------------------------------
    async def act(request: Request, name: str, what: str, call: Callable[[Entry, Any], Any], then: str,
                  required: dict[str, str] | None = None) -> Response:
        """Run the action ``call(entry, form)`` off the event loop once the form passed its CSRF
        checks and holds every ``required`` field (else a 400 page with that field's message); a
        refusal is a 409 page naming ``what`` failed, success redirects to ``then``."""
        form, refusal = await checked_form(request)
        if refusal is not None:
            return refusal
        entry = entry_or_404(name)
        for field, message in (required or {}).items():
            if not str(form.get(field) or "").strip():
                return page(request, "message.html", status_code=400, use_case=name, title=f"{what} refused",
                            message=message)
        from starlette.concurrency import run_in_threadpool

        try:
            await run_in_threadpool(_with_mlflow, call, entry, form)
        except ModelcycleError as exc:
            return page(request, "message.html", status_code=409, use_case=name, title=f"{what} failed",
                        message=str(exc))
        return RedirectResponse(f"/use-cases/{name}/{then}", status_code=303)

    @app.post("/use-cases/{name}/runs/{run_id}/deploy", include_in_schema=False)
    async def deploy_run(request: Request, name: str, run_id: str) -> Response:
        return await act(request, name, "deploy", lambda entry, form: entry.use_case.deploy(run_id=run_id), "endpoint")

    @app.post("/use-cases/{name}/model/promote", include_in_schema=False)
    async def promote(request: Request, name: str) -> Response:
        def move(entry: Entry, form: Any) -> None:
            _promote(entry, str(form.get("stage") or ""), str(form["reason"]).strip())

        return await act(request, name, "promote", move, "model", required={
            "reason": "a reason is required to move a model to another stage: fill in 'reason'"})

    @app.post("/use-cases/{name}/monitoring/evaluate", include_in_schema=False)
    async def evaluate_now(request: Request, name: str) -> Response:
        return await act(request, name, "evaluate", lambda entry, form: entry.use_case.evaluate(plots=False), "monitoring")

    # -- the JSON API -----------------------------------------------------------------------
    def api(name: str, read: Callable[[Entry], Any]) -> Any:
        entry = entry_or_404(name)
        try:
            return read(entry)
        except ModelcycleError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.get("/api/use-cases", tags=["use cases"])
    def api_use_cases() -> dict[str, Any]:
        """Every use case found (name, directory) and an error card for each that cannot be read."""
        entries, errors = catalog.scan()
        return {"use_cases": [{"name": e.name, "directory": str(e.directory)} for e in entries],
                "errors": [{"path": e.path, "message": e.message} for e in errors]}

    @app.get("/api/use-cases/{name}/status", tags=["use cases"])
    def api_status(name: str) -> Any:
        """``modelcycle status --json``."""
        return api(name, catalog.status)

    @app.get("/api/use-cases/{name}/runs", tags=["runs"])
    def api_runs(name: str) -> Any:
        """``modelcycle runs --json`` (newest first)."""
        return api(name, catalog.runs)

    @app.get("/api/use-cases/{name}/runs/{run_id}", tags=["runs"])
    def api_run(name: str, run_id: str) -> Any:
        """One run: its ``runs --json`` row, tags, dataset inputs, artifacts, per-epoch series."""
        detail = api(name, lambda e: catalog.run_detail(e, run_id))
        if detail is None:
            raise HTTPException(404, f"use case '{name}' has no run '{run_id}'")
        return detail

    @app.get("/api/use-cases/{name}/inventory", tags=["governance"])
    def api_inventory(name: str) -> Any:
        """``modelcycle inventory --json``."""
        return api(name, catalog.inventory)

    @app.get("/api/use-cases/{name}/evaluations", tags=["monitoring"])
    def api_evaluations(name: str) -> Any:
        """``modelcycle evaluations --json`` (oldest first)."""
        return api(name, catalog.evaluations)

    @app.get("/api/use-cases/{name}/endpoint", tags=["serving"])
    def api_endpoint(name: str) -> Any:
        """The endpoint's record, metrics from its ``/metrics``, payload/feedback counts, recent requests."""
        return api(name, catalog.endpoint)

    return app


def _with_mlflow(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an action that may use MLflow once MLflow is imported (see :func:`mlflow_ready`)."""
    mlflow_ready()
    return action(*args, **kwargs)


def _card(entry: Entry, exc: Exception) -> ErrorCard:
    """The error card of a use case whose data could not be read: a modelcycle error's message
    says what to do; anything else is named by type and logged with its traceback."""
    if isinstance(exc, ModelcycleError):
        return ErrorCard(str(entry.directory), str(exc))
    log.error("modelcycle ui: reading %s failed", entry.directory, exc_info=exc)
    return ErrorCard(str(entry.directory), f"reading this use case failed: {type(exc).__name__}: {exc}")


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the dashboard's forms send;
    anything else reads as an empty form, which the CSRF check then refuses)."""
    from urllib.parse import parse_qsl

    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100))


def _timestamp(value: Any, scale: float = 1000.0) -> str:
    """An epoch time (milliseconds, as MLflow stores it; seconds with ``scale=1``) as UTC text."""
    from datetime import datetime, timezone

    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return datetime.fromtimestamp(value / scale, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


#: Jinja2 filters the templates use.
FILTERS: dict[str, Callable[..., str]] = {
    "number": number_text,
    "timestamp": _timestamp,
    "timestamp_s": lambda v: _timestamp(v, 1.0),
    "ms": lambda v: "—" if v is None else f"{v:.1f} ms",
    "percent": lambda v: "—" if v is None else f"{100 * v:.2f} %",
}


def _panels(entry: Entry) -> list[dict[str, Any]]:
    """The plugins' ``dashboard_panels`` for this use case; a failing plugin becomes a panel
    saying so (one broken plugin cannot take the page down)."""
    registry = entry.use_case.registry
    try:
        registry.load_command_plugins()
        answers = registry.hook.dashboard_panels(use_case=entry.use_case)
    except Exception as exc:  # plugin code
        return [{"title": "plugin panels", "html": None, "figure": None, "error": f"{type(exc).__name__}: {exc}"}]
    panels = []
    for answer in answers:
        for panel in answer or []:
            if isinstance(panel, dict) and panel.get("title"):
                panels.append({"title": str(panel["title"]), "html": panel.get("html"),
                               "figure": jsonable(panel["figure"]) if panel.get("figure") else None, "error": None})
    return panels


def _promote(entry: Entry, stage: str, reason: str) -> None:
    """Move the served (else latest) model asset to ``stage`` with ``reason``: recorded in the
    local inventory (audited with source ``ui``) and followed by the run's MLflow registry alias,
    as ``govern --stage`` does. An asset a governance backend mirrors, whose endpoint serves, goes
    through ``UseCase.govern`` instead, so the backend records the move too."""
    from modelcycle.core.governance.service import Governance, follow_stage_in_registry

    use_case = entry.use_case
    governance = Governance(use_case)
    asset = governance.asset()
    if asset.get("remote") and asset["stage"] != "develop" and use_case.state().done("deploy"):
        endpoint = use_case.endpoint()
        if endpoint and endpoint.get("status") == "InService" and endpoint.get("run_id") == asset["run_id"]:
            use_case.govern(stage=stage, reason=reason)
            return
    moved = governance.store.move_stage(asset["id"], stage, governance.who, reason=reason, source="ui")
    if not moved["moved"]:
        from modelcycle.core.governance.errors import TransitionError

        raise TransitionError(f"the model of run {asset['run_id']} is already in stage '{stage}': pick another stage")
    follow_stage_in_registry(use_case, asset["run_id"], stage)
