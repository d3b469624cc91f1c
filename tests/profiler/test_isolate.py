"""Measurements in a child process: a result, or a readable reason; the caller never falls over."""

import os
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the [profiler] extra")

from tests.estimator.tiny_configs import TINY_CONFIGS  # noqa: E402
from tunefit.estimator import EstimateRequest, LoraSpec  # noqa: E402
from tunefit.estimator.units import GIB, MIB  # noqa: E402
from tunefit.profiler.isolate import run_isolated  # noqa: E402

TINY = EstimateRequest({"config": TINY_CONFIGS["llama-gqa"]}, method="lora", device="cpu", batch_size=1, seq_len=8,
                       lora=LoraSpec(r=4))


def test_success_reports_progress_and_the_result():
    progress, beats = [], []
    outcome = run_isolated(TINY, steps=2, timeout_s=300, memory_limit_bytes=8 * GIB,
                           on_progress=progress.append, heartbeat=lambda: beats.append(1))
    assert outcome.status == "done", outcome.error
    assert outcome.result["measured"]["steady_state_steps"] == [2]
    assert {"phase": "optimizer_step", "step": 2, "steps": 2} in progress
    assert beats  # the caller can keep a heartbeat while the child works


def test_a_bad_config_fails_with_the_reason():
    # The estimator accepts any activation name; transformers cannot build "no_such_act".
    bad = EstimateRequest({"config": {**TINY_CONFIGS["llama-gqa"], "hidden_act": "no_such_act"}}, method="lora",
                          device="cpu", lora=LoraSpec(r=4))
    outcome = run_isolated(bad, steps=1, timeout_s=300, memory_limit_bytes=8 * GIB)
    assert outcome.status == "failed" and outcome.result is None
    assert "no_such_act" in outcome.error


def test_the_memory_guard_stops_a_child_over_its_limit():
    outcome = run_isolated(TINY, steps=1, timeout_s=300, memory_limit_bytes=64 * MIB)
    assert outcome.status == "failed"
    assert outcome.error.startswith("memory guard:") and "64 MiB limit" in outcome.error


def test_the_time_limit_stops_a_hanging_child():
    outcome = run_isolated(TINY, steps=1, timeout_s=0.5)
    assert outcome.status == "failed" and "timed out after 0.5 s" in outcome.error


def _niceness_of_children() -> list[int]:
    """The nice value (field 19 of /proc/<pid>/stat) of this process's children."""
    values = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                values.append(int(fields[16]))
    return values


def test_the_measurement_runs_at_lower_cpu_priority():
    seen: list[list[int]] = []
    outcome = run_isolated(TINY, steps=1, timeout_s=120, niceness=7,
                           on_progress=lambda _: seen.append(_niceness_of_children()))
    assert outcome.status == "done"
    assert seen and all(os.nice(0) + 7 in values for values in seen)
