"""Answers from the simulation, for architectures the formulas do not know: the first answer (the
model built on the meta device, the setting simulated at the fit's shapes and fitted) and every
later shape of the same setting (read off the fit), in one run beside a formula estimate.

Run: python bench/simulated_bench.py   (needs the [profiler] extra; prints a table; goals: a first
answer for an 8B-class model within 30 s on a 2-core machine, a later shape under 1 ms)
"""

from __future__ import annotations

import statistics
import time

import transformers

from tunefit.estimator import estimate
from tunefit.estimator.request import request_from_fields
from tunefit.estimator.simulated import SimulatedStep, simulated_document
from tunefit.profiler.generic import simulated_step

transformers.utils.logging.set_verbosity_error()

# The config classes' own defaults (each the family's published default size), as transformers builds them
FAMILIES = ("lfm2", "qwen3_5_text", "gemma4_text")
LATER_SHAPES = [(b, s) for b in (1, 2, 4, 8, 16) for s in (256, 1024, 2048, 4096)]


def first_answer_s(config: dict) -> tuple[float, SimulatedStep]:
    start = time.perf_counter()
    step = simulated_step(request_from_fields({"model": {"config": config}, "method": "qlora", "batch_size": 4,
                                               "seq_len": 2048}))
    simulated_document(step, ["rtx-4090"])
    return time.perf_counter() - start, step


def later_shape_ms(step: SimulatedStep) -> float:
    times = []
    for b, s in LATER_SHAPES:
        start = time.perf_counter()
        step.peak(b, s)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def formula_ms() -> float:
    request = request_from_fields({"model": "llama-3.1-8b", "method": "qlora", "batch_size": 4, "seq_len": 2048})
    start = time.perf_counter()
    for _ in range(100):
        estimate(request)
    return (time.perf_counter() - start) * 10


def main() -> None:
    print(f"{'model_type':14s}{'params':>16s}  {'first answer s':>14s}  {'later shape ms':>14s}  how")
    for family in FAMILIES:
        config = transformers.AutoConfig.for_model(family).to_dict()
        seconds, step = first_answer_s(config)
        print(f"{family:14s}{step.total_params:>16,}  {seconds:14.1f}  {later_shape_ms(step):14.3f}  "
              f"{step.how['kind']}")
    print(f"formula estimate (llama-3.1-8b qlora, for scale): {formula_ms():.3f} ms")


if __name__ == "__main__":
    main()
