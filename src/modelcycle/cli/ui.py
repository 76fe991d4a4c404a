"""CLI subcommand ``modelcycle ui``: serve the dashboard over the use cases under some directories.

Only argparse at import: FastAPI, Jinja2, plotly and uvicorn load when the command runs, so
``modelcycle --help`` stays light.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any, Callable

__all__ = ["add_commands", "serve"]


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), so the real port is known before
    serving starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from modelcycle.core.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                          "(0 takes a free one) or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(directories: list[str], host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          open_browser: bool = False) -> int:
    """Print ``modelcycle ui: serving on http://HOST:PORT/`` (the real port), then serve until
    SIGINT or SIGTERM. Refuses a host beyond loopback without a token (ConfigError)."""
    from modelcycle.ui.app import create_app

    app = create_app(directories, token=token, host=host)  # refuses before anything listens
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    print(f"modelcycle ui: serving on {url}", flush=True)
    import threading

    threading.Thread(target=app.state.catalog.warm, name="modelcycle-ui-warm", daemon=True).start()
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    import uvicorn

    import signal

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the handler
    # it found: SIGTERM is the normal way to stop this server, so that handler ends with exit 0
    # (SIGINT keeps Python's: 'interrupted', exit 130, like every command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0


def add_commands(commands: Any, use_case: Callable[[Any], Any], print_json: Callable[[Any], None]) -> None:
    """Add ``modelcycle ui`` to the ``modelcycle`` parser."""
    from modelcycle.ui.security import TOKEN_VARIABLE

    parser = commands.add_parser("ui", help="serve the web dashboard over the use cases under DIR (default: .)")
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="directories holding use cases (searched below too)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; "
                        "anything beyond loopback needs --token)")
    parser.add_argument("--port", type=int, default=0, help="port (default: 0, a free one, printed)")
    parser.add_argument("--token", default=None,
                        help=f"require this token: a sign-in page for browsers, a bearer token for the API "
                             f"(default: ${TOKEN_VARIABLE})")
    parser.add_argument("--open", action="store_true", help="open the dashboard in the default browser")

    def cmd_ui(args: argparse.Namespace) -> int:
        token = args.token or os.environ.get(TOKEN_VARIABLE) or None
        return serve(args.dirs or ["."], host=args.host, port=args.port, token=token, open_browser=args.open)

    parser.set_defaults(func=cmd_ui)
