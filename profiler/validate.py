"""Run the validation matrix: one CPU measurement per case (or, ``simulated``, one meta-device
simulation of a catalog model), appended to a JSONL file as it finishes (an interrupted run
resumes where it stopped; nothing measured is lost)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .matrix import Case, cases, simulation_cases

STEPS = 2  # step two is the steady state
# The key of a stored case that could not run, and why (no measurement in it)
UNRUNNABLE = "unrunnable"


def done_cases(path: Path) -> set[str]:
    """The ids of the cases ``path`` already holds (none where it does not exist yet)."""
    if not path.exists():
        return set()
    return {json.loads(line)["case"] for line in path.read_text().splitlines() if line.strip()}


def run_matrix(path: Path, selected: list[Case] | None = None,
               report: Callable[[int, int, Case, dict[str, Any] | None, str | None], None] | None = None,
               simulated: bool = False) -> int:
    """Measure (or simulate) every case not yet in ``path``; returns how many ran now."""
    if simulated:
        from .simulation import simulate as measure
    else:
        from .run import measure

    source = "meta-simulation" if simulated else "cpu-validation"
    done = done_cases(path)
    todo = [c for c in (selected or (simulation_cases() if simulated else cases())) if c.id not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(todo, 1):
        started = time.perf_counter()
        try:
            result = measure(case.request, steps=STEPS)
        except Exception as exc:  # a case that cannot run is reported, the matrix goes on
            reason = f"{type(exc).__name__}: {exc}"
            if report:
                report(i, len(todo), case, None, reason)
            if simulated:  # the meta device is deterministic: the row records why, once
                _append(path, {"case": case.id, "model": case.model, "split": case.split, "source": source,
                               "request": _request_doc(case), UNRUNNABLE: reason})
            continue
        _append(path, {"case": case.id, "model": case.model, "split": case.split, "source": source, **result})
        if report:
            report(i, len(todo), case, result, f"{time.perf_counter() - started:.1f} s")
    return len(todo)


def _append(path: Path, line: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def _request_doc(case: Case) -> dict[str, Any] | None:
    """The case's request as a stored measurement writes it (None where the estimator refuses it)."""
    from tunefit.estimator import EstimateError, estimate
    from tunefit.estimator.document import request_document

    try:
        return request_document(estimate(case.request))
    except EstimateError:
        return None
