"""Run the IBM worker with its HTTP transport redirected: IBM Cloud hosts → the fake service.

For the IBM Cloud (SaaS) code path of ``ibm-aigov-facts-client``, whose URLs are fixed
(``iam.cloud.ibm.com``, ``api.dataplatform.cloud.ibm.com``, ``resource-controller.cloud.ibm.com``),
there is no setting that points it at loopback. This wrapper replaces ``requests``' transport
(``HTTPAdapter.send``) in the worker process only: a request to any ``*.ibm.com`` host is sent to
``FAKE_FACTSHEETS_URL`` instead, with its original URL in ``X-Original-URL``; any other
non-loopback request is refused, so nothing reaches the internet.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests.adapters

_TARGET = urlsplit(os.environ["FAKE_FACTSHEETS_URL"])
_send = requests.adapters.HTTPAdapter.send


def _redirected_send(self: Any, request: Any, **kwargs: Any) -> Any:
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    if host.endswith(".ibm.com"):
        request.headers["X-Original-URL"] = request.url
        request.url = urlunsplit((_TARGET.scheme, _TARGET.netloc, parts.path, parts.query, parts.fragment))
    elif host not in ("127.0.0.1", "localhost", "::1"):
        raise requests.exceptions.ConnectionError(f"blocked in tests: {request.url}")
    return _send(self, request, **kwargs)


requests.adapters.HTTPAdapter.send = _redirected_send

if __name__ == "__main__":
    from modelcycle.platforms.ibm.worker import main

    sys.exit(main())
