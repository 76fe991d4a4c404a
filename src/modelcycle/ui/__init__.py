"""``modelcycle ui``: one offline web dashboard over the use cases under some directories.

:mod:`.discovery` finds the use cases, :mod:`.data` reads read-only snapshots of them (never
taking a use case's lock), :mod:`.app` serves the pages (Jinja2 templates, plotly.js from the
installed ``plotly`` package) and the JSON API, :mod:`.security` guards it (token sign-in beyond
loopback, CSRF on every POST). FastAPI, Jinja2 and plotly are imported only when the UI runs.
"""

from __future__ import annotations

__all__: list[str] = []
