"""Monitoring: payload and feedback records, quality and drift evaluations (the local backend).

The pieces, in the order a record travels:

* :mod:`.payload` / :mod:`.journal` — the endpoint journals every scored request (one frame,
  one ``os.write``) before it answers 200, and a background thread drains the journal into the
  store in batches; a restart replays what was not stored yet. Record ids: a one-image request's
  record is its response's ``scoring_id``; image *i* of an N-image request is
  ``f"{scoring_id}-{i}"`` (listed as ``"scoring_ids"`` in the JSON response when N > 1).
  Durable against the process being killed, not against power loss unless
  ``monitoring.payload.fsync`` is on. ``monitoring.payload.enabled: false`` deploys endpoints
  without it; ``sampling_percentage`` logs a deterministic per-request sample.
* :mod:`.store` — SQLAlchemy tables on SQLite (WAL, under ``.modelcycle/``) or PostgreSQL
  (``monitoring.database_url`` / ``MODELCYCLE_DATABASE_URL``); ``scoring_id`` keys make every
  replay idempotent.
* :mod:`.endpoint` — the endpoint's ``POST /feedback`` (ground truth by scoring id, OpenScale
  ``fields``/``values``, or inline inputs) and ``POST /payload/flush``.
* :mod:`.quality`, :mod:`.drift`, :mod:`.thresholds`, :mod:`.evaluation`, :mod:`.plots` — the
  monitors, their thresholds (``{metric_id, type: lower_limit|upper_limit, value}``), stored
  measurements and PNG plots.
* :mod:`.service` / :mod:`.commands` — ``UseCase.monitor/log_payload/log_feedback/
  attach_feedback/evaluate/evaluations`` and the ``modelcycle`` subcommands.
"""
