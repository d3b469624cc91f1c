"""The reports pages: measurements as rows, charts of predicted against measured, one
measurement in detail. Formatting and geometry here; templates place them."""

from __future__ import annotations

from typing import Any

from tunefit.app.jobs.service import PRIVATE_ENVIRONMENT
from tunefit.app.reports.data import (
    FILTERS,
    Row,
    accuracy_table,
    filtered,
    measured_and_simulated,
    simulations_by_plan,
)
from tunefit.app.reports.documents import by_device_document, row_document, stats_document
from tunefit.app.web.charts import METHOD_COLOURS, histogram, paired_bars, scatter, stacked_chart
from tunefit.estimator import ESTIMATOR_VERSION, estimate
from tunefit.estimator.document import request_from_document
from tunefit.estimator.units import GIB


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
    breakdown = stacked_chart("Predicted breakdown at the peak", [("predicted", est.breakdown)])
    return {
        "id": measurement_id, "case": result.get("case", ""), "row": row_document(row) if row else None,
        "phases": paired_bars(phases),
        "phase_rows": [{"phase": p, "predicted": f"{pr:,}", "measured": f"{m:,}",
                        "error": f"{100 * (pr - m) / m:+.2f}" if m else "—"} for p, pr, m in phases],
        "timeline": [{"phase": t["phase"], "step": t["step"], "peak": f"{t['peak_allocated_bytes']:,}",
                      "after": f"{t['allocated_bytes']:,}"} for t in [measured["load"], *measured["timeline"]]],
        "breakdown": breakdown, "measured_peak": f"{measured['peak_allocated_bytes']:,}",
        "predicted_peak": f"{est.peak_allocated_bytes:,}",
        "environment": [(k, v) for k, v in result["environment"].items()
                        if v is not None and k not in PRIVATE_ENVIRONMENT],
        "counter": measured["counter"], "request": result["request"],
        "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION,
    }
