"""The ``ledger`` governance backend's settings and backend object (imported by the hooks in
:mod:`modelcycle_example_extras.ledger` when a command governs).

The backend mirrors governed model assets into a JSON-lines file.

One JSON object per line, each with ``event``, ``at`` (UTC, ISO 8601), ``asset_id`` and
``run_id``:

- ``publish`` (``govern``): the asset's name, stage, framework, dataset lineage, deployment and
  custom facts;
- ``facts`` (``modelcycle facts set`` on a published asset): the custom facts;
- ``remove`` (``cleanup --governance``): one line per published asset not removed yet.

Settings (``governance.ledger:``): ``path`` of the file; a relative path is taken from the use
case directory.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NAME = "ledger"


class LedgerSettings(BaseModel):
    """``governance.ledger:``: where the ledger file is."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="the JSON-lines file; relative paths are from the use case directory")


class LedgerBackend:
    """A :class:`~modelcycle.core.plugin_types.GovernanceBackend` writing to one JSON-lines file."""

    name = NAME

    def __init__(self, settings: LedgerSettings) -> None:
        self.settings = settings

    def file(self, governance: Any) -> Path:
        """The ledger file: ``path``, relative paths resolved against the use case directory."""
        path = Path(self.settings.path).expanduser()
        use_case = getattr(governance, "use_case", None)
        if not path.is_absolute() and use_case is not None:
            path = Path(use_case.directory) / path
        return path

    def _append(self, governance: Any, event: str, asset: dict[str, Any], **fields: Any) -> Path:
        path = self.file(governance)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"event": event, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "asset_id": asset["id"], "run_id": asset.get("run_id"), **fields}
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=str, sort_keys=True) + "\n")
        return path

    def events(self, governance: Any) -> list[dict[str, Any]]:
        """Every event of the ledger, oldest first (none when the file does not exist)."""
        path = self.file(governance)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    @staticmethod
    def _custom_facts(governance: Any, asset: dict[str, Any]) -> dict[str, Any]:
        return {key: fact["value"] for key, fact in governance.store.custom_facts(asset["id"]).items()}

    def publish(self, governance: Any, asset: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any]:
        """Append a ``publish`` line; the returned ids (kept on the asset) name the file."""
        path = self._append(
            governance, "publish", asset,
            name=asset.get("name"), stage=asset.get("stage"), framework=asset.get("framework"),
            dataset={"name": asset.get("dataset_name"), "checksums": asset.get("dataset_checksums")},
            deployment=None if deployment is None else
            {k: deployment.get(k) for k in ("id", "name", "url", "platform", "model_data")},
            custom_facts=self._custom_facts(governance, asset),
        )
        return {"backend": NAME, "ledger": str(path)}

    def push_facts(self, governance: Any, asset: dict[str, Any]) -> dict[str, Any] | None:
        """Append a ``facts`` line with the asset's current custom facts."""
        path = self._append(governance, "facts", asset, custom_facts=self._custom_facts(governance, asset))
        return {**(asset.get("remote") or {}), "backend": NAME, "ledger": str(path)}

    def remove(self, governance: Any, assets: list[dict[str, Any]]) -> int:
        """Append a ``remove`` line for each of ``assets`` published and not removed yet; return
        how many."""
        live: set[str] = set()
        for event in self.events(governance):
            if event["event"] == "publish":
                live.add(event["asset_id"])
            elif event["event"] == "remove":
                live.discard(event["asset_id"])
        removed = [asset for asset in assets if asset["id"] in live]
        for asset in removed:
            self._append(governance, "remove", asset)
        return len(removed)

