"""The dashboard's guards: loopback-or-token binding, token sign-in, CSRF on every POST.

* :func:`check_binding` refuses a host beyond loopback without a token (as endpoints do).
* With a token, a browser signs in once at ``/login`` (an HttpOnly session cookie derived from the
  token, never the token itself); API clients send ``Authorization: Bearer <token>``.
* Every POST carries a hidden ``csrf`` field equal to the ``modelcycle_csrf`` cookie and comes
  from this dashboard's own origin (``Origin``, else ``Referer``, naming the request's host).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from modelcycle.core.errors import ConfigError

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "TOKEN_VARIABLE", "check_binding", "is_loopback", "new_csrf",
           "session_value", "signed_in", "csrf_problem", "safe_next"]

CSRF_COOKIE = "modelcycle_csrf"
SESSION_COOKIE = "modelcycle_session"
TOKEN_VARIABLE = "MODELCYCLE_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this machine."""
    if host.strip("[]").lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token was given (says how to give one).
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without a token: anyone who can reach it could "
            f"deploy and promote models. Pass --token TOKEN (or set {TOKEN_VARIABLE}), or bind 127.0.0.1"
        )


def session_value(token: str) -> str:
    """The session cookie's value for ``token`` (a keyed hash: the cookie never holds the token)."""
    return hmac.new(token.encode(), b"modelcycle-ui-session", hashlib.sha256).hexdigest()


def signed_in(token: str | None, cookies: dict[str, str], authorization: str | None) -> bool:
    """Whether the request may see the dashboard: no token configured, the right bearer token,
    or the session cookie of a sign-in."""
    if not token:
        return True
    if authorization and authorization.lower().startswith("bearer "):
        if hmac.compare_digest(authorization[7:].strip().encode(), token.encode()):
            return True
    cookie = cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_problem(form_value: Any, cookies: dict[str, str], headers: Any) -> str | None:
    """Why this POST is refused (``None``: it may go on): the form's ``csrf`` must equal the
    ``modelcycle_csrf`` cookie and ``Origin`` (else ``Referer``) must name the request's host."""
    cookie = cookies.get(CSRF_COOKIE, "")
    if not cookie or not isinstance(form_value, str) or not hmac.compare_digest(form_value.encode(), cookie.encode()):
        return ("the form's CSRF token is missing or does not match this browser's: reload the page "
                "and submit the form again")
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return "the request names no Origin or Referer: submit the form from the dashboard's own page"
    if urlsplit(source).netloc.lower() != str(headers.get("host", "")).lower():
        return f"the request comes from {urlsplit(source).netloc or source}, not from this dashboard"
    return None


def safe_next(target: str | None) -> str:
    """A redirect target after sign-in: a path on this site only (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
