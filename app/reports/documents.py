"""Report documents: stored measurements as rows with this estimator's prediction, the accuracy
tables, and the JSON and CSV downloads (``GET /api/v1/reports``, ``/reports.json``, ``/reports.csv``).
The pages built from them are ``app.web.report_pages``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import orjson

from tunefit.app.core.db import Database
from tunefit.app.reports.data import (
    FILTERS,
    Row,
    accuracy_table,
    by_device,
    filtered,
    measured_and_simulated,
    row_cache,
)
from tunefit.estimator import ESTIMATOR_VERSION

COLUMNS = ("id", "case", "model", "family", "method", "dtype", "batch_size", "seq_len", "gradient_checkpointing",
           "attn", "recipe", "device", "device_kind", "split", "source", "measured_bytes", "predicted_bytes",
           "error_percent", "paper_bytes", "paper_error_percent")


def row_document(r: Row) -> dict[str, Any]:
    """One row as the API and the downloads give it (bytes, errors in %)."""
    return {"id": r.id, "case": r.case, "model": r.model, "family": r.family, "method": r.method, "dtype": r.dtype,
            "batch_size": r.batch_size, "seq_len": r.seq_len, "gradient_checkpointing": r.gradient_checkpointing,
            "attn": r.attn, "recipe": r.recipe, "device": r.device, "device_kind": r.device_kind, "split": r.split,
            "source": r.source,
            "measured_bytes": r.measured_bytes, "predicted_bytes": r.predicted_bytes,
            "error_percent": round(100 * r.error, 3), "paper_bytes": r.paper_bytes,
            "paper_error_percent": round(100 * r.paper_error, 3)}


def stats_document(table: dict[str, Any]) -> dict[str, Any]:
    def s(x):
        return {"n": x.n, "median_percent": round(100 * x.median, 3), "max_percent": round(100 * x.max, 3)}

    return {"methods": {m: {k: s(v) for k, v in d.items()} for m, d in table["methods"].items()},
            "phases": {m: {k: s(v) for k, v in d.items()} for m, d in table["phases"].items()},
            "recipes": {m: {k: s(v) for k, v in d.items()} for m, d in table["recipes"].items()}}


def report_document(rows: list[Row], filters: dict[str, str], skipped: int = 0) -> dict[str, Any]:
    """Rows (measured, and simulated ones with ``device`` meta), the accuracy of ours against the
    measurements (``accuracy``) and, separately, against the simulations (``accuracy_simulated``);
    ``skipped``: stored measurements left out because they cannot be read (``data.to_row``)."""
    sel = filtered(rows, **filters)
    measured, simulated = measured_and_simulated(sel)
    return {"estimator_version": ESTIMATOR_VERSION, "filters": filters, "rows": [row_document(r) for r in sel],
            "accuracy": stats_document(accuracy_table(measured)),
            "accuracy_simulated": stats_document(accuracy_table(simulated)), "by_device": by_device_document(sel),
            "skipped": skipped}


# ``GET /api/v1/reports`` asks the database for new measurements at most this often: under load
# the answer is then a dictionary lookup, and a new measurement shows up within this long.
REPORT_REFRESH_S = 1.0


def report_json(db: Database, filters: dict[str, str], max_age_s: float = REPORT_REFRESH_S) -> bytes:
    """``report_document`` of every stored measurement as JSON bytes, made again only when a
    measurement was added (``GET /api/v1/reports``)."""
    cache = row_cache(db)
    return cache.derived(db, ("json", tuple(sorted(filters.items()))),
                         lambda table_rows: orjson.dumps(report_document(table_rows, filters, cache.skipped())),
                         max_age_s)


def by_device_document(sel: list[Row]) -> dict[str, Any]:
    """Plans measured on several device kinds: per kind, the ids of its rows, the latest measured
    peak and the error of ours on it."""
    groups = by_device(sel)
    return {"kinds": groups["kinds"], "plans": [
        {"case": p["case"], "request": json.loads(p["plan"]),
         "devices": {kind: {"ids": [r.id for r in rs], "measured_bytes": rs[-1].measured_bytes,
                            "predicted_bytes": rs[-1].predicted_bytes, "error_percent": round(100 * rs[-1].error, 3)}
                     for kind, rs in p["cells"].items()}}
        for p in groups["plans"]]}


def report_csv(rows: list[Row], filters: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for r in filtered(rows, **filters):
        writer.writerow(row_document(r))
    return out.getvalue()


def filters_from(query: Mapping[str, str]) -> dict[str, str]:
    """The report filters a query string sets (empty ones left out)."""
    return {k: value for k in FILTERS if (value := query.get(k))}
