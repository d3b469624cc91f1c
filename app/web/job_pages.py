"""The profiling job pages: progress while a job runs, predicted against measured once done."""

from __future__ import annotations

from typing import Any

from tunefit.app.web.charts import gib_text
from tunefit.estimator import ESTIMATOR_VERSION
from tunefit.estimator.units import GIB


def job_context(job_doc: dict[str, Any]) -> dict[str, Any]:
    """A job page: status and progress, then predicted vs measured once it is done."""
    progress = job_doc["progress"]
    finished = job_doc["status"] in ("done", "failed")
    context = {
        "job": job_doc, "finished": finished, "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION,
        "kind": "Simulation" if job_doc["request"].get("device") == "meta" else "Measurement",
        "progress_text": _progress_text(job_doc["status"], progress),
        "progress_value": _progress_value(progress), "rows": [], "measured": None,
    }
    result = job_doc["result"]
    if result:
        context.update(rows=_measured_rows(result), measured=_measured_summary(result))
    return context


def _progress_text(status: str, progress: dict[str, Any] | None) -> str:
    """What the status word leaves out ("" when it says it all: done, failed, cancelled)."""
    if status == "queued":
        return "waiting for a worker"
    if status == "running" and progress:
        return f"{progress['phase']} (step {progress['step']} of {progress['steps']})"
    return ""


def _progress_value(progress: dict[str, Any] | None) -> str:
    """How far along, as a fraction for <progress>: three phases per step."""
    if not progress or not progress["steps"]:
        return "0"
    order = {"load": 0, "forward": 1, "backward": 2, "optimizer_step": 3, "prefill": 3}
    done = (max(progress["step"] - 1, 0) * 3 + order.get(progress["phase"], 0)) / (3 * progress["steps"])
    return f"{min(done, 1):.3f}"


def _measured_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    predicted = {p["phase"]: p["allocated_bytes"] for p in result["prediction"]["phases"]}
    predicted["peak"] = result["prediction"]["peak_allocated_bytes"]
    measured = dict(result["measured"]["phase_peaks"], peak=result["measured"]["peak_allocated_bytes"])
    rows = []
    for phase, value in measured.items():
        expected = predicted.get(phase)
        rows.append({"phase": phase, "predicted": f"{expected:,}" if expected is not None else "—",
                     "measured": f"{value:,}", "measured_gib": gib_text(value),
                     "error": f"{100 * (expected - value) / value:+.1f}" if expected and value else "—"})
    return rows


def _measured_summary(result: dict[str, Any]) -> dict[str, Any]:
    env = result["environment"]
    return {
        "what": "simulated" if result["environment"]["device"] == "meta" else "measured",
        "counter": result["measured"]["counter"],
        "steady": ", ".join(str(s) for s in result["measured"]["steady_state_steps"]),
        "trainable_measured": f"{result['trainable_params']['trainable']:,}",
        "trainable_predicted": f"{result['prediction']['params']['trainable']:,}",
        "environment": [(k, v) for k, v in env.items() if v is not None],
        "duration": f"{result['duration_s']:.1f}",
    }


def jobs_context(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"jobs": rows, "gib_bytes": f"{GIB:,}", "estimator_version": ESTIMATOR_VERSION}
