"""The reports pages: measurements as rows, charts of predicted against measured, one
measurement in detail. Formatting and geometry here; templates place them."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import orjson

from tunefit.estimator import ESTIMATOR_VERSION, estimate
from tunefit.estimator.document import request_from_document
from tunefit.estimator.units import GIB

from .charts import METHOD_COLOURS, histogram, paired_bars, scatter, stacked_chart
from .db import Database
from .reports import (
    FILTERS,
    Row,
    accuracy_table,
    by_device,
    filtered,
    measured_and_simulated,
    row_cache,
    simulations_by_plan,
)

COLUMNS = ("id", "case", "model", "family", "method", "dtype", "batch_size", "seq_len", "gradient_checkpointing",
           "attn", "device", "device_kind", "split", "source", "measured_bytes", "predicted_bytes", "error_percent",
           "paper_bytes", "paper_error_percent")


def row_document(r: Row) -> dict[str, Any]:
    """One row as the API and the downloads give it (bytes, errors in %)."""
    return {"id": r.id, "case": r.case, "model": r.model, "family": r.family, "method": r.method, "dtype": r.dtype,
            "batch_size": r.batch_size, "seq_len": r.seq_len, "gradient_checkpointing": r.gradient_checkpointing,
            "attn": r.attn, "device": r.device, "device_kind": r.device_kind, "split": r.split, "source": r.source,
            "measured_bytes": r.measured_bytes, "predicted_bytes": r.predicted_bytes,
            "error_percent": round(100 * r.error, 3), "paper_bytes": r.paper_bytes,
            "paper_error_percent": round(100 * r.paper_error, 3)}


def stats_document(table: dict[str, Any]) -> dict[str, Any]:
    def s(x):
        return {"n": x.n, "median_percent": round(100 * x.median, 3), "max_percent": round(100 * x.max, 3)}

    return {"methods": {m: {k: s(v) for k, v in d.items()} for m, d in table["methods"].items()},
            "phases": {m: {k: s(v) for k, v in d.items()} for m, d in table["phases"].items()}}


def report_document(rows: list[Row], filters: dict[str, str]) -> dict[str, Any]:
    """Rows (measured, and simulated ones with ``device`` meta), the accuracy of ours against the
    measurements (``accuracy``) and, separately, against the simulations (``accuracy_simulated``)."""
    sel = filtered(rows, **filters)
    measured, simulated = measured_and_simulated(sel)
    return {"estimator_version": ESTIMATOR_VERSION, "filters": filters, "rows": [row_document(r) for r in sel],
            "accuracy": stats_document(accuracy_table(measured)),
            "accuracy_simulated": stats_document(accuracy_table(simulated)), "by_device": by_device_document(sel)}


# ``GET /api/v1/reports`` asks the database for new measurements at most this often: under load
# the answer is then a dictionary lookup, and a new measurement shows up within this long.
REPORT_REFRESH_S = 1.0


def report_json(db: Database, filters: dict[str, str], max_age_s: float = REPORT_REFRESH_S) -> bytes:
    """``report_document`` of every stored measurement as JSON bytes, made again only when a
    measurement was added (``GET /api/v1/reports``)."""
    return row_cache(db).derived(db, ("json", tuple(sorted(filters.items()))),
                                 lambda table_rows: orjson.dumps(report_document(table_rows, filters)), max_age_s)


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


def by_device_context(sel: list[Row]) -> dict[str, Any]:
    """The side-by-side table: one row per plan, one column per device kind (GiB, error %)."""
    doc = by_device_document(sel)
    rows = []
    for plan in doc["plans"]:
        cells = []
        for kind in doc["kinds"]:
            d = plan["devices"].get(kind)
            cells.append({"measured_gib": f"{d['measured_bytes'] / GIB:.4f}", "error": f"{d['error_percent']:+.2f}",
                          "href": f"/reports/{d['ids'][-1]}"} if d else None)
        rows.append({"case": plan["case"], "cells": cells})
    return {"kinds": doc["kinds"], "rows": rows}


def report_csv(rows: list[Row], filters: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for r in filtered(rows, **filters):
        writer.writerow(row_document(r))
    return out.getvalue()


def filters_from(query) -> dict[str, str]:
    return {k: query.get(k) for k in FILTERS if query.get(k)}


def _three_columns(r: Row, simulations: dict[tuple[str, str], Row]) -> dict[str, str]:
    """Formula / simulated / measured of one row, in GiB ("—" where none is stored)."""
    sim = r if r.simulated else simulations.get((r.plan, r.target))
    return {"predicted_gib": f"{r.predicted_bytes / GIB:.4f}",
            "simulated_gib": f"{sim.measured_bytes / GIB:.4f}" if sim else "—",
            "measured_gib": "—" if r.simulated else f"{r.measured_bytes / GIB:.4f}"}


def reports_context(rows: list[Row], filters: dict[str, str], query_string: str) -> dict[str, Any]:
    sel = filtered(rows, **filters)
    measured, simulated = measured_and_simulated(sel)
    table = stats_document(accuracy_table(measured))
    simulations = simulations_by_plan(rows)
    options = {k: sorted({str(getattr(r, k)) for r in rows}) for k in FILTERS}
    hists = [histogram(f"{method}: error of ours (%)", [100 * r.error for r in sel if r.method == method],
                       METHOD_COLOURS.get(method, "#888"))
             for method in sorted({r.method for r in sel})]
    return {
        "rows": [{**row_document(r), **_three_columns(r, simulations), "error": f"{100 * r.error:+.2f}",
                  "paper_error": f"{100 * r.paper_error:+.1f}"} for r in sel],
        "table": table, "simulated_table": stats_document(accuracy_table(simulated)) if simulated else None,
        "filters": filters, "options": options, "query": query_string,
        "scatter": scatter([(r.measured_bytes, r.predicted_bytes, r.method, f"{r.case}: {100 * r.error:+.2f} %",
                             f"/reports/{r.id}") for r in sel]),
        "histograms": hists, "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION,
        "by_device": by_device_context(sel),
    }


def measurement_context(measurement_id: int, result: dict[str, Any], row: Row | None) -> dict[str, Any]:
    """One measurement: the phase chart, predicted breakdown, provenance."""
    est = estimate(request_from_document(result["request"]))
    measured = result["measured"]
    phases = [(p, est_phase, measured["phase_peaks"][p]) for p, est_phase in
              ((p.name, p.allocated_bytes) for p in est.phases) if p in measured["phase_peaks"]]
    breakdown = stacked_chart("Predicted breakdown at the peak (GiB)", [("predicted", est.breakdown)])
    return {
        "id": measurement_id, "case": result.get("case", ""), "row": row_document(row) if row else None,
        "phases": paired_bars(phases),
        "phase_rows": [{"phase": p, "predicted": f"{pr:,}", "measured": f"{m:,}",
                        "error": f"{100 * (pr - m) / m:+.2f}" if m else "—"} for p, pr, m in phases],
        "timeline": [{"phase": t["phase"], "step": t["step"], "peak": f"{t['peak_allocated_bytes']:,}",
                      "after": f"{t['allocated_bytes']:,}"} for t in [measured["load"], *measured["timeline"]]],
        "breakdown": breakdown, "measured_peak": f"{measured['peak_allocated_bytes']:,}",
        "predicted_peak": f"{est.peak_allocated_bytes:,}",
        "environment": [(k, v) for k, v in result["environment"].items() if v is not None],
        "counter": measured["counter"], "request": result["request"],
        "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION,
    }
