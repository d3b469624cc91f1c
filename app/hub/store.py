"""Where resolved Hub models are kept: the service's database (``hub_models``), or for the command
line a folder of JSON files in the user's cache. Either answers a repeated or offline query."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tunefit.app.core.db import Database

Stored = tuple[dict[str, Any], datetime]  # a snapshot's JSON and when it was fetched


class HubStore(Protocol):
    def get(self, repo_key: str, revision: str) -> Stored | None:
        """The snapshot stored for ``repo_key`` at ``revision`` (as asked, or its commit)."""

    def put(self, repo_key: str, revision: str, sha: str, snapshot: dict[str, Any]) -> None:
        """Keep ``snapshot``, found by ``revision`` and by its commit ``sha``."""


class DatabaseStore:
    """The service's and its workers' store: every process of a deployment shares it."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, repo_key: str, revision: str) -> Stored | None:
        return self.db.get_hub_model(repo_key, revision)

    def put(self, repo_key: str, revision: str, sha: str, snapshot: dict[str, Any]) -> None:
        self.db.put_hub_model(repo_key, revision, sha, snapshot)


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/tunefit/hub`` (``~/.cache/tunefit/hub``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tunefit" / "hub"


class FolderStore:
    """The command line's store: one JSON file per id and revision, written atomically."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or default_folder()

    def _path(self, repo_key: str, revision: str) -> Path:
        return self.folder / (hashlib.sha256(f"{repo_key}@{revision}".encode()).hexdigest()[:32] + ".json")

    def get(self, repo_key: str, revision: str) -> Stored | None:
        try:
            entry = json.loads(self._path(repo_key, revision).read_text(encoding="utf-8"))
            return entry["snapshot"], datetime.fromisoformat(entry["stored_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # nothing stored, or a file this version cannot read: ask the Hub

    def put(self, repo_key: str, revision: str, sha: str, snapshot: dict[str, Any]) -> None:
        entry = json.dumps({"snapshot": snapshot, "stored_at": datetime.now(UTC).isoformat()})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for key in {revision, sha}:
                with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False, encoding="utf-8") as fh:
                    fh.write(entry)
                os.replace(fh.name, self._path(repo_key, key))
        except OSError:
            pass  # a read-only cache only costs the next query a request to the Hub
