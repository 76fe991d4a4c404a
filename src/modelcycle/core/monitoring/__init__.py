"""Monitoring: payload and feedback records, quality and drift evaluations.

The pieces, in the order a record travels:

* :mod:`.records` — :class:`~.records.PayloadRecord`, one scored image as every platform hands
  it to the store. Record ids: a one-image request's record is its response's ``scoring_id``;
  image *i* of an N-image request is ``f"{scoring_id}-{i}"``. How a platform logs them is its
  own business (the local endpoint journals every request before it answers 200, see
  :mod:`modelcycle.platforms.local.payload`); the platform hook ``flush_payload`` brings them
  into the store and ``send_feedback`` scores labelled records.
* :mod:`.store` — SQLAlchemy tables on SQLite (WAL, under ``.modelcycle/``) or PostgreSQL
  (``monitoring.database_url`` / ``MODELCYCLE_DATABASE_URL``); ``scoring_id`` keys make every
  replay idempotent.
* :mod:`.quality`, :mod:`.drift`, :mod:`.thresholds`, :mod:`.evaluation`, :mod:`.plots` — the
  monitors, their thresholds (``{metric_id, type: lower_limit|upper_limit, value}``), stored
  measurements and PNG plots.
* :mod:`.backends` — the monitoring backend plugin (``monitoring.backend``: ``local``,
  ``openscale``, a third party's) that mirrors subscription, records and quality runs.
* :mod:`.service` / :mod:`.commands` — ``UseCase.monitor/log_payload/log_feedback/
  attach_feedback/evaluate/evaluations`` and the ``modelcycle`` subcommands.

Nothing here imports :mod:`modelcycle.core.lifecycle`: the service works on
:class:`~modelcycle.core.view.UseCaseView`.
"""
