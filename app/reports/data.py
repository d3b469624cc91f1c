"""Measured vs predicted: every stored measurement estimated again by today's estimator, the
error of ours next to the paper's formula and two common calculator rules, and the accuracy table.

Error is ``(predicted - measured) / measured`` of the peak allocated bytes of a step (training)
or of the prefill (inference); the table reports the median and the maximum of its magnitude.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunefit.app.core.db import Database, Measurement
from tunefit.estimator import EstimateError, estimate
from tunefit.estimator.document import request_from_document
from tunefit.estimator.estimate import MAX_PLAN_BYTES
from tunefit.estimator.request import DEFAULT_ADAPTER_DTYPE, DEFAULT_REQUEST, default_loss
from tunefit.profiler.device import slug
from tunefit.profiler.validate import UNRUNNABLE

# The shipped measurements, package data of ``tunefit.reports`` (the repository's reports/data in an
# editable install, where ``tunefit validate --run`` adds to them).
REPORTS_DATA = Path(str(resources.files("tunefit.reports") / "data"))
# Other calculators' rules, as their documentation states them (bytes per parameter of the model):
RULE_ADAM_4X = "4× weights for Adam training, 1× for LoRA / inference (16-bit weights)"
RULE_4BIT_ALL = "every weight at 4 bits (0.5 byte/param) under QLoRA, else as the 4× rule"
PHASES = ("load", "forward", "backward", "optimizer_step", "prefill", "decode")


@dataclass(frozen=True)
class Row:
    """One measurement next to the figures that predict it."""

    id: int
    case: str
    model: str
    family: str
    method: str
    dtype: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    attn: str
    device: str
    device_kind: str  # cpu, or cuda.<gpu name> (what a fleet worker calls its queue)
    plan: str  # the request without its device: one plan measured on several devices shares it
    split: str
    source: str
    recipe: str  # the recipe choices that differ from the defaults (:func:`recipe_of`), or "base"
    measured_bytes: int
    predicted_bytes: int
    paper_bytes: int
    rule_4x_bytes: int
    rule_4bit_bytes: int
    phase_measured: dict[str, int]
    phase_predicted: dict[str, int]

    @property
    def simulated(self) -> bool:
        """A meta-device simulation (``measured_bytes`` then holds the simulated peak)."""
        return self.device == "meta"

    @property
    def target(self) -> str:
        """The device type the numbers are for: where it ran, or what a simulation simulated."""
        return self.device_kind.split(".", 1)[1] if self.simulated else self.device

    @property
    def error(self) -> float:
        return relative_error(self.predicted_bytes, self.measured_bytes)

    @property
    def paper_error(self) -> float:
        return relative_error(self.paper_bytes, self.measured_bytes)

    @property
    def rule_4x_error(self) -> float:
        return relative_error(self.rule_4x_bytes, self.measured_bytes)

    @property
    def rule_4bit_error(self) -> float:
        return relative_error(self.rule_4bit_bytes, self.measured_bytes)


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured if measured else 0.0


def rule_4x(method: str, params: int) -> int:
    """The common rule of thumb: weights ×4 for Adam training (weights, grads, two states)."""
    weights = params * 2  # these rules assume 16-bit weights
    return 4 * weights if method == "full" else weights


def rule_4bit(method: str, params: int) -> int:
    """Calculators that price every weight at 4 bits under QLoRA (embeddings and head included)."""
    return params // 2 if method == "qlora" else rule_4x(method, params)


# What a stored result may fail with when it is not what a measurement writes (a row from another
# version, a hand-edited file, a hostile job): the row is left out of the reports, with a count.
UNREADABLE = (EstimateError, KeyError, TypeError, ValueError, AttributeError, IndexError)


def row_of(m: Measurement) -> Row | None:
    """:func:`to_row` of a stored measurement (whose JSON itself may not parse)."""
    try:
        result = m.result
    except ValueError:
        return None
    return to_row(m.id, m.source, m.split, result)


def to_row(measurement_id: int, source: str, split: str, result: dict[str, Any]) -> Row | None:
    """The measurement next to today's estimate of its request; None when the estimator refuses the
    request or the result cannot be read (:data:`UNREADABLE`, or byte counts no measurement has)."""
    try:
        return _row(measurement_id, source, split, result)
    except UNREADABLE:
        return None


def measured_count(value: Any) -> int:
    """A stored byte count: an integer from 0 to 2^63 - 1 (what any measurement reports), else
    ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PLAN_BYTES:
        raise ValueError(f"not a byte count a measurement reports: {value!r}")
    return value


def _row(measurement_id: int, source: str, split: str, result: dict[str, Any]) -> Row:
    request_doc = result["request"]
    est = estimate(request_from_document(request_doc))
    measured = result["measured"]
    case = result.get("case", "")
    model = result.get("model") or (request_doc["model"] if isinstance(request_doc["model"], str) else "config.json")
    return Row(
        id=measurement_id, case=case, model=model,
        family=est.arch.model_type, method=request_doc["method"], dtype=request_doc["dtype"],
        batch_size=request_doc["batch_size"], seq_len=request_doc["seq_len"],
        gradient_checkpointing=request_doc["gradient_checkpointing"], attn=request_doc["attn_implementation"],
        device=result["environment"]["device"], device_kind=device_kind(result), plan=plan_key(request_doc),
        split=split or "-", source=source, recipe=recipe_of(request_doc),
        measured_bytes=_positive(measured_count(measured["peak_allocated_bytes"])),
        predicted_bytes=est.peak_allocated_bytes,
        paper_bytes=est.paper.bytes, rule_4x_bytes=rule_4x(est.request.method, est.total_params),
        rule_4bit_bytes=rule_4bit(est.request.method, est.total_params),
        phase_measured={str(phase): measured_count(n) for phase, n in measured["phase_peaks"].items()},
        phase_predicted={p.name: p.allocated_bytes for p in est.phases},
    )


# The recipe choices (issue 19) a measurement is reported by, with their defaults (the estimator's)
RECIPE_DEFAULTS = {"loop": DEFAULT_REQUEST.loop, "grad_accum": DEFAULT_REQUEST.grad_accum,
                   "autocast": DEFAULT_REQUEST.autocast, "loss": default_loss(DEFAULT_REQUEST.objective),
                   "objective": DEFAULT_REQUEST.objective, "adapter_dtype": DEFAULT_ADAPTER_DTYPE,
                   "inference_mode": DEFAULT_REQUEST.inference_mode, "new_tokens": DEFAULT_REQUEST.new_tokens}
BASE_RECIPE = "base"


def recipe_of(request_doc: dict[str, Any]) -> str:
    """The recipe choices of a request that differ from the defaults, ``loop=plain``,
    ``grad_accum`` (any count above one: the peak of a cycle does not depend on it), ``autocast=bf16``, joined by
    ``+``; :data:`BASE_RECIPE` where none does (a document from before a choice existed has its default)."""
    changed = []
    for name, default in RECIPE_DEFAULTS.items():
        value = request_doc.get(name, default)
        if value != default:
            changed.append(name if name == "grad_accum" else f"{name}={value}")
    return "+".join(changed) or BASE_RECIPE


def _positive(n: int) -> int:
    """The peak every error is relative to: a measurement of nothing has none."""
    if n <= 0:
        raise ValueError("a measured peak of 0 bytes")
    return n


def device_kind(result: dict[str, Any]) -> str:
    """The kind a worker stored, else ``cuda.<gpu name>`` / ``cpu`` from the environment."""
    if result.get("device_kind"):
        return result["device_kind"]
    env = result["environment"]
    if env["device"] == "meta":
        return f"meta.{env.get('target') or 'cuda'}"
    return f"cuda.{slug(env.get('device_name') or 'unknown')}" if env["device"] == "cuda" else "cpu"


PLAN_IGNORES = ("device", "gpu")


def plan_key(request_doc: dict[str, Any]) -> str:
    """Canonical JSON of a request without the device it ran on."""
    return json.dumps({k: v for k, v in request_doc.items() if k not in PLAN_IGNORES}, sort_keys=True)


def by_device(table_rows: Iterable[Row]) -> dict[str, Any]:
    """Plans measured on more than one device kind, side by side: ``{kinds, plans}`` where each plan
    has its case label and, per kind, the rows measured there (newest last)."""
    plans: dict[str, dict[str, list[Row]]] = {}
    for r in table_rows:
        plans.setdefault(r.plan, {}).setdefault(r.device_kind, []).append(r)
    shared = {key: kinds for key, kinds in plans.items() if len(kinds) > 1}
    kinds = sorted({kind for per_kind in shared.values() for kind in per_kind})
    return {"kinds": kinds,
            "plans": [{"plan": key, "case": next(iter(per_kind.values()))[-1].case, "cells": per_kind}
                      for key, per_kind in sorted(shared.items())]}


def measured_and_simulated(table_rows: Iterable[Row]) -> tuple[list[Row], list[Row]]:
    """(measurements, simulations): the accuracy of ours is reported against each separately."""
    table_rows = list(table_rows)
    return [r for r in table_rows if not r.simulated], [r for r in table_rows if r.simulated]


def simulations_by_plan(table_rows: Iterable[Row]) -> dict[tuple[str, str], Row]:
    """The latest simulation of each (plan, target device type)."""
    return {(r.plan, r.target): r for r in table_rows if r.simulated}


def plan_evidence(db: Database, request_doc: dict[str, Any]) -> dict[str, Any]:
    """What is stored for one plan on its device type: the latest simulation and the latest
    measurement (``{"simulated": {id, bytes, device_kind} | None, "measured": ... | None}``),
    matched on the request without its device (read from the stored documents, not re-estimated)."""
    key, device = plan_key(request_doc), request_doc["device"]
    found: dict[str, Any] = {"simulated": None, "measured": None}
    for m in db.measurements():
        try:
            result = m.result
            request = result["request"]
            if request.get("device") != device or plan_key(request) != key:
                continue
            simulated = result["environment"]["device"] == "meta"
            item = {"id": m.id, "bytes": _positive(measured_count(result["measured"]["peak_allocated_bytes"])),
                    "device_kind": device_kind(result)}
        except UNREADABLE:  # left out, as the reports leave it out
            continue
        found["simulated" if simulated else "measured"] = item
    return found


class RowCache:
    """Every stored measurement's row, each estimated once per process.

    Measurements are only ever added, never changed, and a row is a pure function of its
    measurement and this estimator; so each is estimated when first seen, and a call reads only the
    measurements stored since the last (ids above the highest seen). Without it every report
    request estimated every measurement again (about 0.1-0.3 s for the 236 shipped ones).
    """

    def __init__(self) -> None:
        self._rows: dict[int, Row | None] = {}
        self._last_id = 0
        self._read_at = float("-inf")  # when the database was last asked for new measurements
        self._added_seen = -1  # the database object's count of measurements this process added, then
        self._lock = threading.Lock()
        self._derived: dict[Any, tuple[int, Any]] = {}  # key: (last id it was made from, value)

    def __call__(self, db: Database, max_age_s: float = 0.0) -> list[Row]:
        """The rows; with ``max_age_s``, the database is asked for new measurements only when this
        process added some or it was last asked longer ago than that (other processes, a fleet's
        workers, add them too), so a burst of report requests reads it once."""
        with self._lock:
            if db.measurements_added != self._added_seen or time.monotonic() - self._read_at >= max_age_s:
                self._read_new(db)
            return [row for row in self._rows.values() if row is not None]

    def skipped(self) -> int:
        """Stored measurements left out of the rows (:func:`to_row` could not read them)."""
        with self._lock:
            return sum(row is None for row in self._rows.values())

    def _read_new(self, db: Database) -> None:
        with Session(db.engine) as session:
            fresh = list(session.scalars(select(Measurement).where(Measurement.id > self._last_id)
                                         .order_by(Measurement.id)))
        for m in fresh:
            self._rows[m.id] = row_of(m)
            self._last_id = m.id
        self._read_at = time.monotonic()
        self._added_seen = db.measurements_added

    def derived(self, db: Database, key: Any, make: Callable[[list[Row]], T], max_age_s: float = 0.0) -> T:
        """``make(rows)``, made again only when measurements were added since (a report document
        is a pure function of the rows and its filters: ``key``)."""
        table_rows = self(db, max_age_s)
        with self._lock:
            version = self._last_id
            known = self._derived.get(key)
            if known is not None and known[0] == version:
                return known[1]
        value = make(table_rows)
        with self._lock:
            if len(self._derived) >= MAX_DERIVED:
                self._derived.clear()
            self._derived[key] = (version, value)
        return value


MAX_DERIVED = 256  # report documents kept per database (one per filter combination asked for)
T = TypeVar("T")
_row_caches: weakref.WeakKeyDictionary[Database, RowCache] = weakref.WeakKeyDictionary()
_row_caches_lock = threading.Lock()


def row_cache(db: Database) -> RowCache:
    with _row_caches_lock:
        return _row_caches.setdefault(db, RowCache())


def rows(db: Database) -> list[Row]:
    """The rows of every measurement in ``db``, in the order they were stored."""
    return row_cache(db)(db)


def skipped_measurements(db: Database) -> int:
    """Measurements in ``db`` that :func:`rows` leaves out (they cannot be read)."""
    cache = row_cache(db)
    cache(db)
    return cache.skipped()


FILTERS = ("method", "family", "split", "device", "device_kind", "source", "dtype", "attn")


def filtered(all_rows: Iterable[Row], **filters: str | None) -> list[Row]:
    """Rows matching every given filter (``None`` or "" matches all)."""
    wanted = {k: v for k, v in filters.items() if v and k in FILTERS}
    return [r for r in all_rows if all(str(getattr(r, k)) == v for k, v in wanted.items())]


@dataclass(frozen=True)
class Stat:
    n: int
    median: float
    max: float


def stat(errors: list[float]) -> Stat:
    magnitudes = [abs(e) for e in errors]
    return Stat(len(magnitudes), statistics.median(magnitudes) if magnitudes else 0.0, max(magnitudes, default=0.0))


def accuracy_table(table_rows: list[Row]) -> dict[str, Any]:
    """Per method (and all), per split: our error, the paper's, the two rules'; per phase: ours;
    per recipe (the base one included), per split: ours."""
    methods = sorted({r.method for r in table_rows}) + ["all"]
    out: dict[str, Any] = {"methods": {}, "phases": {}, "recipes": {}}
    for recipe in sorted({r.recipe for r in table_rows}):
        sel = [r for r in table_rows if r.recipe == recipe]
        out["recipes"][recipe] = {
            "ours": stat([r.error for r in sel]),
            "ours_fit": stat([r.error for r in sel if r.split == "fit"]),
            "ours_holdout": stat([r.error for r in sel if r.split == "holdout"]),
        }
    for method in methods:
        sel = [r for r in table_rows if method in ("all", r.method)]
        out["methods"][method] = {
            "ours": stat([r.error for r in sel]),
            "ours_fit": stat([r.error for r in sel if r.split == "fit"]),
            "ours_holdout": stat([r.error for r in sel if r.split == "holdout"]),
            "paper": stat([r.paper_error for r in sel]),
            "rule_4x": stat([r.rule_4x_error for r in sel]),
            "rule_4bit": stat([r.rule_4bit_error for r in sel]),
        }
        out["phases"][method] = {
            phase: stat([relative_error(r.phase_predicted[phase], r.phase_measured[phase]) for r in sel
                         if phase in r.phase_measured and phase in r.phase_predicted])
            for phase in PHASES
        }
    return out


def format_table(table: dict[str, Any]) -> str:
    """The accuracy table as text (README and docs/accuracy.md quote it)."""
    def cell(s: Stat) -> str:
        return f"{100 * s.median:6.2f} / {100 * s.max:7.2f}" if s.n else "—"

    lines = ["|error| of the peak, median / max in %",
             f"{'method':12s}{'n':>5s}  {'ours':>16s}  {'ours (fit)':>16s}  {'ours (holdout)':>16s}  "
             f"{'paper formula':>16s}  {'4x rule':>16s}  {'4-bit-all rule':>16s}"]
    for method, s in table["methods"].items():
        lines.append(f"{method:12s}{s['ours'].n:5d}  {cell(s['ours']):>16s}  {cell(s['ours_fit']):>16s}  "
                     f"{cell(s['ours_holdout']):>16s}  {cell(s['paper']):>16s}  {cell(s['rule_4x']):>16s}  "
                     f"{cell(s['rule_4bit']):>16s}")
    width = max([len("recipe"), *map(len, table["recipes"])]) + 2
    lines += ["", "ours per recipe, median / max in %",
              f"{'recipe':{width}s}{'n':>5s}  {'ours':>16s}  {'ours (fit)':>16s}  {'ours (holdout)':>16s}"]
    for recipe, s in table["recipes"].items():
        lines.append(f"{recipe:{width}s}{s['ours'].n:5d}  {cell(s['ours']):>16s}  {cell(s['ours_fit']):>16s}  "
                     f"{cell(s['ours_holdout']):>16s}")
    lines += ["", "ours per phase (peak of the phase), median / max in %",
              f"{'method':12s}" + "".join(f"{p:>18s}" for p in PHASES)]
    for method, phases in table["phases"].items():
        lines.append(f"{method:12s}" + "".join(
            f"{cell(s) if s.n else '—':>18s}" for s in phases.values()))
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def measurements_in(path: Path) -> list[dict[str, Any]]:
    """The measurements a shipped file holds: its cases but those that record why they could not
    run (``UNRUNNABLE``: the meta device has no kernel for an op, the estimator refuses the plan)."""
    return [item for item in read_jsonl(path) if UNRUNNABLE not in item]


def rows_from_files(paths: Iterable[Path]) -> list[Row]:
    """Rows straight from measurement files (no database), numbered in file order."""
    out: list[Row] = []
    for path in paths:
        for item in measurements_in(path):
            row = to_row(len(out) + 1, item.get("source", path.stem), item.get("split", ""), item)
            if row is not None:
                out.append(row)
    return out


def import_jsonl(db: Database, directory: Path = REPORTS_DATA) -> int:
    """Load the shipped measurement files (``reports/data/*.jsonl``) into the database."""
    added = 0
    for path in sorted(directory.glob("*.jsonl")):
        batch = [(f"{item.get('source', path.stem)}:{item['case']}", item.get("source", path.stem),
                  item.get("split", ""), item) for item in measurements_in(path)]
        added += db.add_measurements(batch)
    return added
