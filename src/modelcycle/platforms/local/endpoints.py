"""Start, probe and stop local endpoint processes (by pid), with their records."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelcycle.core.errors import EndpointError

__all__ = ["start_endpoint", "endpoint_status", "stop_endpoint", "request", "post_json", "process_alive"]

_SERVER_MODULE = "modelcycle.platforms.local.server"


def process_alive(pid: int | None) -> bool:
    """True when ``pid`` runs a modelcycle endpoint server (guards against pid reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    if not cmdline:  # a zombie: exited, not yet reaped
        return False
    return _SERVER_MODULE.encode() in cmdline


def request(
    host: str, port: int, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 60.0,
) -> tuple[int, bytes, str]:
    """One HTTP request to a local endpoint; returns ``(status, body, content_type)``."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("content-type", "")
    finally:
        connection.close()


def post_json(record: dict[str, Any], path: str, document: Any, token: str | None, timeout: float = 120.0) -> tuple[int, Any]:
    """POST ``document`` as JSON to the endpoint ``record`` (its monitoring routes); returns
    ``(status, decoded JSON answer)``, a non-JSON answer as ``{"error": {"message": text}}``."""
    import orjson

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    status, payload, _ = request(record["host"], record["port"], "POST", path, body, headers, timeout=timeout)
    try:
        return status, orjson.loads(payload)
    except orjson.JSONDecodeError:
        return status, {"error": {"message": payload.decode(errors="replace")}}


def error_message(document: Any) -> str:
    """The ``message`` of an endpoint's JSON error answer (``{"error": {"message": ...}}``)."""
    error = document.get("error", document) if isinstance(document, dict) else document
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(name: str, process: subprocess.Popen[bytes], ready: Path, log: Path, host: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise EndpointError(
                f"endpoint '{name}' exited with code {process.returncode} while starting; log {log}:\n{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise EndpointError(f"endpoint '{name}' did not become ready in {timeout:.0f} s; log {log}:\n{_log_tail(log)}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    status, _, _ = request(host, info["port"], "GET", "/ping", timeout=10)
    if status != 200:
        raise EndpointError(f"endpoint '{name}' answered /ping with {status}; log {log}")
    return info


def start_endpoint(
    name: str, model_dir: Path, run_dir: Path, host: str = "127.0.0.1", port: int = 0,
    token: str | None = None, threads: int = 1, max_body_mb: float = 6.0, timeout: float = 120.0,
    payload: dict[str, Any] | None = None, slot: Path | None = None, instance: str | None = None,
) -> dict[str, Any]:
    """Start a detached server process for ``model_dir`` and wait until ``/ping`` answers.

    ``slot`` (a directory, one per use case) makes a redeploy seamless: the new process takes the
    listening socket of the endpoint serving the slot, if any, so old and new serve the same
    URL side by side until the caller stops the old one (:mod:`.handoff`); ``inherited_from`` in
    the record names the old process. ``instance`` names this process's ready and log files
    (default: ``name``), so two processes of one endpoint name do not share them.

    ``payload`` turns on payload logging: ``{"journal", "database_url", "sampling_percentage",
    "fsync", "flush_interval_ms", "batch_records", "drain"}`` (see
    :func:`modelcycle.platforms.local.payload.endpoint_payload_settings`). The store URL reaches
    the process through its environment, never its command line.

    Returns:
        The endpoint record: name, url, host, port, pid, status, model_dir, log, started_at,
        ``payload_logging`` (whether scored records are journaled), ``payload_journal`` and
        ``payload_store`` (the masked store URL).

    Raises:
        EndpointError: the process exited or did not become ready within ``timeout``; the
            message carries the tail of its log. The process is stopped then.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / f"{instance or name}.ready.json"
    log = run_dir / f"{instance or name}.log"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MODELCYCLE_SERVING_THREADS": str(threads)}
    env.pop("MODELCYCLE_ENDPOINT_TOKEN", None)
    if token:
        env["MODELCYCLE_ENDPOINT_TOKEN"] = token
    command = [
        sys.executable, "-m", _SERVER_MODULE, "--model-dir", str(model_dir), "--name", name,
        "--host", host, "--port", str(port), "--ready-file", str(ready), "--max-body-mb", str(max_body_mb),
    ] + (["--slot", str(slot)] if slot else [])
    env.pop("MODELCYCLE_DATABASE_URL", None)
    if payload:
        env["MODELCYCLE_DATABASE_URL"] = payload["database_url"]
        command += [
            "--payload-journal", str(payload["journal"]),
            "--payload-sampling", str(payload.get("sampling_percentage", 100.0)),
            "--payload-flush-ms", str(payload.get("flush_interval_ms", 1000)),
            "--payload-batch", str(payload.get("batch_records", 1000)),
            "--payload-drain", str(payload.get("drain", "process")),
        ] + (["--payload-fsync"] if payload.get("fsync") else [])
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, close_fds=True,
        )
    try:
        info = _wait_ready(name, process, ready, log, host, timeout)
    except BaseException:  # never leave a half-started server behind (errors, Ctrl-C)
        _terminate(process.pid)
        raise
    url_host = f"[{host}]" if ":" in host else host
    return {
        "name": name,
        "platform": "local",
        "url": f"http://{url_host}:{info['port']}",
        "host": host,
        "port": info["port"],
        "pid": process.pid,
        "status": "InService",
        "model_dir": str(model_dir),
        "log": str(log),
        "ready_file": str(ready),
        "auth": bool(token),
        "payload_logging": bool(payload),
        "payload_journal": str(payload["journal"]) if payload else None,
        "payload_store": _masked(payload["database_url"]) if payload else None,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inherited_from": info.get("inherited_from"),
    }


def _masked(url: str) -> str:
    from modelcycle.core.monitoring.store import mask_url

    return mask_url(url)


def endpoint_status(record: dict[str, Any]) -> str:
    """``InService`` (process alive and ``/ping`` 200), ``Degraded``, ``Unhealthy`` or ``Stopped``."""
    return endpoint_health(record)[0]


def endpoint_health(record: dict[str, Any]) -> tuple[str, str | None]:
    """``(status, reason)``: ``InService`` (process alive, ``/ping`` 200), ``Degraded`` (``/ping``
    200 naming why, e.g. the payload drainer is being restarted), ``Unhealthy`` (``/ping`` not 200:
    the reason it gives) or ``Stopped``; the reason is None when there is nothing to say."""
    if not process_alive(record.get("pid")):
        return "Stopped", None
    try:
        status, body, _ = request(record["host"], record["port"], "GET", "/ping", timeout=5)
    except OSError as exc:
        return "Unhealthy", f"/ping failed: {exc}"
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = {}
    if status == 200:
        if isinstance(document, dict) and document.get("status") == "Degraded":
            return "Degraded", str(document.get("reason"))
        return "InService", None
    return "Unhealthy", f"/ping answered {status}" + (f": {error_message(document)}" if document else "")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL; reap it if it is our child."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                if _gone(pid):
                    return
            time.sleep(0.05)


#: logs of stopped endpoint processes kept per endpoints directory (the newest ones)
KEEP_LOGS = 5


def stop_endpoint(record: dict[str, Any]) -> int:
    """Stop the endpoint's process (SIGTERM, then SIGKILL) and remove its leftovers: its ready
    file, its payload journal once every record in it is stored (a graceful stop drains it; a
    journal still holding records stays for the next drain), and the logs of stopped processes
    beyond the newest :data:`KEEP_LOGS`.

    Returns:
        1 when an endpoint was removed (its process stopped or its leftovers deleted), else 0.
    """
    from modelcycle.platforms.local.journal import remove_drained_journal

    removed = 0
    pid = record.get("pid")
    if process_alive(pid):
        _terminate(int(pid))  # type: ignore[arg-type]
        removed = 1
    ready = record.get("ready_file")
    if ready and Path(ready).exists():
        Path(ready).unlink()
        removed = 1
    if record.get("payload_journal"):
        remove_drained_journal(Path(record["payload_journal"]))
    if record.get("log"):
        _prune_logs(Path(record["log"]).parent)
    return removed


def _prune_logs(directory: Path) -> None:
    """Delete the logs of stopped endpoint processes in ``directory`` (those without a ready
    file) but the :data:`KEEP_LOGS` written last."""
    stopped = []
    for log in directory.glob("*.log"):
        if not log.with_name(log.name[: -len(".log")] + ".ready.json").exists():
            try:
                stopped.append((log.stat().st_mtime, log))
            except OSError:
                continue
    for _, log in sorted(stopped, reverse=True)[KEEP_LOGS:]:
        log.unlink(missing_ok=True)
