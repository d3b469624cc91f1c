"""The model and GPU catalogs: data files under ``estimator/data``, each entry with its source."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

from .arch import ArchSpec, arch_from_config
from .errors import UnknownIdError


@dataclass(frozen=True)
class CatalogModel:
    """A catalog model: its config.json facts and where they come from."""

    id: str
    name: str
    family: str
    hf_repo: str
    source: str
    arch: ArchSpec
    published_params: int | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Gpu:
    """A GPU with its memory in bytes; ``usable_bytes`` is what the driver reports when known."""

    id: str
    name: str
    vendor: str
    memory_bytes: int
    memory_label: str
    source: str
    reported_total_bytes: int | None = None
    reported_source: str | None = None
    bf16: bool = True
    usable_bytes: int = field(init=False)  # what the driver reports when known, else the rated size

    def __post_init__(self) -> None:
        object.__setattr__(self, "usable_bytes", self.reported_total_bytes or self.memory_bytes)


def _data_dir() -> Traversable:
    return resources.files("tunefit.estimator") / "data"


@lru_cache(maxsize=1)
def models() -> dict[str, CatalogModel]:
    """All catalog models keyed by id, sorted by id."""
    out: dict[str, CatalogModel] = {}
    for path in sorted((_data_dir() / "models").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".json"):
            continue
        raw = json.loads(path.read_text(encoding="utf-8"))
        out[raw["id"]] = CatalogModel(
            id=raw["id"], name=raw["name"], family=raw["family"], hf_repo=raw["hf_repo"],
            source=raw["source"], arch=arch_from_config(raw["config"]),
            published_params=raw.get("published_params"), config=raw["config"],
        )
    return out


@lru_cache(maxsize=1)
def gpus() -> dict[str, Gpu]:
    """All catalog GPUs keyed by id, in catalog order (consumer to datacenter)."""
    raw = json.loads((_data_dir() / "gpus.json").read_text(encoding="utf-8"))
    fields = {f.name for f in dataclass_fields(Gpu) if f.init}
    return {g["id"]: Gpu(**{k: v for k, v in g.items() if k in fields}) for g in raw}


Entry = TypeVar("Entry", CatalogModel, Gpu)


def _lookup(kind: str, key: str, table: dict[str, Entry], aliases: dict[str, Entry] | None = None) -> Entry:
    folded = str(key).lower()
    item = table.get(key) or table.get(folded) or (aliases or {}).get(folded)
    if item is None:
        raise UnknownIdError(kind, key, difflib.get_close_matches(folded, list(table), n=3, cutoff=0.5))
    return item


@lru_cache(maxsize=1)
def _models_by_repo() -> dict[str, CatalogModel]:
    """Catalog models by their Hugging Face id, case-folded as the Hub resolves it."""
    return {m.hf_repo.lower(): m for m in models().values()}


def get_model(model_id: str) -> CatalogModel:
    """The catalog model ``model_id``, its short id (``qwen3-8b``) or its Hugging Face id
    (``Qwen/Qwen3-8B``); unknown ids raise with the closest matches."""
    return _lookup("model", model_id, models(), _models_by_repo())


def get_gpu(gpu_id: str) -> Gpu:
    """The catalog GPU ``gpu_id``; unknown ids raise with the closest matches."""
    return _lookup("gpu", gpu_id, gpus())
