"""From a model name to what the estimator takes: a catalog id stays a catalog id (no network); a
Hub id (``org/name[@revision]``) is read from the store when it is fresh there (a commit hash
always is), else from the Hub, and stored; with the Hub unreachable, a stored copy of any age
answers and says so."""

from __future__ import annotations

import difflib
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from threading import Lock
from typing import Any

from tunefit.app.core.config import Settings, get_settings
from tunefit.app.hub import client
from tunefit.app.hub.errors import HubError, HubNotFound, HubUnavailable
from tunefit.app.hub.ids import HubRef, looks_like_hub_id, parse_hub_ref
from tunefit.app.hub.snapshot import HubSnapshot
from tunefit.app.hub.store import FolderStore, HubStore
from tunefit.estimator import EstimateError, models
from tunefit.estimator.catalog import get_model

MEMORY_ENTRIES = 256  # snapshots kept in the process (a config is a few KiB)
SEARCH_RESULTS = 5


@dataclass(frozen=True)
class Resolved:
    snapshot: HubSnapshot
    stale: bool = False  # answered from a stored copy past the refresh time: the Hub could not be reached

    def model(self) -> dict[str, Any]:
        """The estimator's ``model``: the config, with where it came from (``source``)."""
        return {"config": self.snapshot.config, "source": self.source()}

    def source(self) -> dict[str, Any]:
        s, checkpoint = self.snapshot, self.snapshot.checkpoint
        return {
            "kind": "hub", "id": s.repo_id, "revision": s.revision, "sha": s.sha, "reference": s.reference,
            "fetched_at": s.fetched_at, "stale": self.stale,
            "checkpoint": None if checkpoint is None else {
                "files": checkpoint.files, "tensors": checkpoint.tensors, "params": checkpoint.params,
                "stored_bytes": checkpoint.stored_bytes, "params_by_dtype": checkpoint.params_by_dtype},
        }


class HubResolver:
    """Resolves Hub ids for one process, through ``store``."""

    def __init__(self, settings: Settings, store: HubStore):
        self.settings = settings
        self.store = store
        self._memory: OrderedDict[tuple[str, str], tuple[HubSnapshot, float]] = OrderedDict()
        self._lock = Lock()

    def model_arg(self, name: str, revision: str | None = None) -> Any:
        """What the estimator takes for ``name``: the catalog id itself, or a Hub model's config
        with its ``source``."""
        if not names_hub_model(name, revision):
            if revision:
                raise EstimateError("revision", f"applies to Hugging Face ids (org/name); {name!r} is a catalog id")
            return name
        return self.resolve(parse_hub_ref(name, revision)).model()

    def commit(self, name: str, revision: str | None = None) -> str:
        """The commit a Hub id resolves to now (reading it from the Hub or the store as
        :meth:`resolve` does): answers for it may be kept under that commit."""
        return self.resolve(parse_hub_ref(name, revision)).snapshot.sha

    def resolve(self, ref: HubRef) -> Resolved:
        if not self.settings.allow_hub:
            raise EstimateError("model", f"{ref.repo_id!r} is not in the catalog, and this service reads no "
                                         "Hugging Face ids (TUNEFIT_ALLOW_HUB=false): paste its config.json")
        key = (ref.repo_id.lower(), ref.revision)
        remembered = self._remembered(key, ref)
        if remembered is not None:
            return Resolved(remembered)
        stored = self.store.get(*key)
        if stored is not None and (ref.pinned or self._age_s(stored[1]) < self.settings.hub_refresh_s):
            # found by its commit, it answers the revision asked (the commit), not the branch it was read as
            snapshot = replace(HubSnapshot.from_json(stored[0]), revision=ref.revision)
            return Resolved(self._remember(key, snapshot))
        if self.settings.hub_offline:
            return self._stored_or(stored, HubUnavailable(ref, "the service is offline (HF_HUB_OFFLINE)"))
        try:
            snapshot = client.fetch(ref, self.settings)
        except HubUnavailable as exc:
            return self._stored_or(stored, exc)
        except HubNotFound as exc:
            raise HubNotFound(ref, revision="revision" in exc.message, suggestions=self.close_ids(ref)) from exc
        self.store.put(key[0], ref.revision, snapshot.sha, snapshot.to_json())
        return Resolved(self._remember(key, snapshot))

    def _stored_or(self, stored: tuple[dict[str, Any], datetime] | None, error: HubError) -> Resolved:
        if stored is None:
            raise error
        return Resolved(replace(HubSnapshot.from_json(stored[0]), revision=error.ref.revision), stale=True)

    def _remembered(self, key: tuple[str, str], ref: HubRef) -> HubSnapshot | None:
        with self._lock:
            entry = self._memory.get(key)
            if entry is None or not (ref.pinned or time.monotonic() - entry[1] < self.settings.hub_refresh_s):
                return None
            self._memory.move_to_end(key)
            return entry[0]

    def _remember(self, key: tuple[str, str], snapshot: HubSnapshot) -> HubSnapshot:
        with self._lock:
            self._memory[key] = (snapshot, time.monotonic())
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)
        return snapshot

    @staticmethod
    def _age_s(fetched: datetime) -> float:
        return (datetime.now(UTC) - fetched).total_seconds()

    def close_ids(self, ref: HubRef) -> list[str]:
        """Catalog ids and Hub ids close to ``ref``'s: the catalog's by spelling, the Hub's by its
        search (skipped when the Hub cannot be reached)."""
        catalog = {m.hf_repo.lower(): m.hf_repo for m in models().values()}
        close = [catalog[k] for k in difflib.get_close_matches(ref.repo_id.lower(), list(catalog), n=3, cutoff=0.6)]
        return list(dict.fromkeys(close + self.search(ref.repo_id.partition("/")[2], quiet=True)))[:SEARCH_RESULTS]

    def search(self, text: str, limit: int = SEARCH_RESULTS, quiet: bool = False) -> list[str]:
        """Hub ids of text-generation models whose id contains ``text``, most downloaded first."""
        if not self.settings.allow_hub or self.settings.hub_offline or not text:
            return []
        try:
            return client.search(text, limit, self.settings)
        except Exception as exc:  # noqa: BLE001 - a suggestion is optional: any failure means none
            if quiet:
                return []
            raise HubUnavailable(HubRef(text), f"the Hub's search failed ({type(exc).__name__})") from exc


def names_hub_model(name: Any, revision: str | None = None) -> bool:
    """Whether ``name`` is read from the Hub: a Hub id the catalog does not hold (a catalog
    model's Hub id at a named revision is read from the Hub too). No network."""
    if not isinstance(name, str) or not looks_like_hub_id(name):
        return False
    return bool(revision) or "@" in name or not _in_catalog(name)


def _in_catalog(repo_id: str) -> bool:
    try:
        get_model(repo_id)
        return True
    except EstimateError:
        return False


_active: HubResolver | None = None


def use(resolver: HubResolver | None) -> None:
    """Make ``resolver`` the one this process resolves Hub ids with (the service and workers: the
    database's store); None: the default again."""
    global _active
    _active = resolver


def active() -> HubResolver:
    """This process's resolver: the one :func:`use` set, else one over the environment's settings
    and the user's cache folder (the command line)."""
    global _active
    if _active is None:
        _active = HubResolver(get_settings(), FolderStore())
    return _active
