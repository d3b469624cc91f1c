"""Estimator throughput: single estimates per second and a full capacity sweep over the GPU catalog.

Run: python bench/estimator_bench.py   (prints a table; goals: > 5,000 estimates/s, sweep < 20 ms)
"""

from __future__ import annotations

import statistics
import time

from tunefit.estimator import EstimateRequest, LoraSpec, capacity, estimate, gpus

CASES = {
    "llama-2-7b qlora r16 all-linear": EstimateRequest("llama-2-7b", method="qlora",
                                                       lora=LoraSpec(r=16, target_modules="all-linear")),
    "llama-3-8b lora q,v bs4 s2048": EstimateRequest("llama-3-8b", method="lora", batch_size=4, seq_len=2048),
    "llama-2-70b full zero3 x8": EstimateRequest("llama-2-70b", method="full", sharding="zero3", num_gpus=8),
    "mixtral-8x7b inference": EstimateRequest("mixtral-8x7b", method="inference", seq_len=4096),
}


def per_second(request: EstimateRequest, seconds: float = 1.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            estimate(request)
        n += 100
    return n / (time.perf_counter() - start)


def sweep_ms(request: EstimateRequest, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        capacity(request)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    print(f"GPU catalog: {len(gpus())} GPUs")
    print(f"{'case':36s}{'estimates/s':>14s}{'sweep ms (median)':>20s}")
    for name, request in CASES.items():
        print(f"{name:36s}{per_second(request):14,.0f}{sweep_ms(request):20.1f}")


if __name__ == "__main__":
    main()
