"""Hardware fit: which GPUs hold a setting, the largest batch and sequence that fit, GPUs needed."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .catalog import Gpu, get_gpu, gpus
from .errors import EstimateError
from .estimate import Estimate, estimate
from .request import MAX_BATCH, EstimateRequest

MAX_SEARCH_GPUS = 1024


@dataclass(frozen=True)
class GpuFit:
    """Whether ``peak_bytes`` fits one GPU, and the margin (negative when it does not)."""

    gpu: str
    fits: bool
    headroom_bytes: int


def fit_table(peak_bytes: int, gpu_ids: list[str] | None = None) -> list[GpuFit]:
    """Fit of a per-GPU peak on each catalog GPU (or on ``gpu_ids``)."""
    table = [get_gpu(g) for g in gpu_ids] if gpu_ids else list(gpus().values())
    return [GpuFit(g.id, peak_bytes <= g.usable_bytes, g.usable_bytes - peak_bytes) for g in table]


def _fits(request: EstimateRequest, gpu: Gpu, **changes) -> bool:
    try:
        return estimate(replace(request, **changes)).peak_bytes <= gpu.usable_bytes
    except EstimateError:
        return False


def _phase_polynomials(request: EstimateRequest, field_name: str) -> list[tuple[float, float, float]]:
    """Per moment of the step, ``allocated(x) = c0 + c1·x + c2·x²`` in the batch size or the sequence length.

    Every term is a sum of products of ``b``, ``s`` and ``s²`` (the eager attention matrix), so
    each phase is exactly quadratic in either; three estimates recover its coefficients.
    """
    rows = [[p.allocated_bytes for p in estimate(replace(request, **{field_name: x})).moments] for x in (1, 2, 3)]
    polys = []
    for y1, y2, y3 in zip(*rows):
        c2 = (y3 - 2 * y2 + y1) / 2
        c1 = (y2 - y1) - 3 * c2
        polys.append((y1 - c1 - c2, c1, c2))
    return polys


def _largest_root(c0: float, c1: float, c2: float, budget: float) -> float:
    """Largest real ``x`` with ``c0 + c1·x + c2·x² <= budget`` (all coefficients >= 0 in practice)."""
    if c0 > budget:
        return 0.0
    if c2 <= 0:
        return math.inf if c1 <= 0 else (budget - c0) / c1
    return (-c1 + math.sqrt(c1 * c1 + 4 * c2 * (budget - c0))) / (2 * c2)


def _allocator_budget(request: EstimateRequest, gpu: Gpu) -> float:
    """Allocated bytes that leave room for the CUDA context and allocator slack on ``gpu``."""
    from .estimate import ALLOCATOR_SLACK_FRACTION, CUDA_CONTEXT_BYTES

    if request.device != "cuda":
        return float(gpu.usable_bytes)
    return (gpu.usable_bytes - CUDA_CONTEXT_BYTES) / (1 + ALLOCATOR_SLACK_FRACTION)


def _largest(request: EstimateRequest, gpu: Gpu, field_name: str, upper: int,
             polys: list[tuple[float, float, float]] | None = None) -> int:
    """Largest value of ``field_name`` in [1, upper] that fits (0 if even 1 does not).

    Solves the per-phase quadratics for the allocator budget, then confirms with exact
    estimates (rounding may move the answer by one).
    """
    polys = polys or _phase_polynomials(request, field_name)
    budget = _allocator_budget(request, gpu)
    if max(sum(p) for p in polys) > budget and not _fits(request, gpu, **{field_name: 1}):
        return 0
    guess = int(max(1, min(min(_largest_root(*p, budget) for p in polys), upper)))
    while guess > 1 and not _fits(request, gpu, **{field_name: guess}):
        guess -= 1
    while guess < upper and _fits(request, gpu, **{field_name: guess + 1}):
        guess += 1
    return guess


def max_batch_size(request: EstimateRequest, gpu_id: str) -> int:
    """The largest micro-batch that fits ``gpu_id`` at the request's sequence length."""
    return _largest(request, get_gpu(gpu_id), "batch_size", MAX_BATCH)


def max_seq_len(request: EstimateRequest, gpu_id: str, limit: int | None = None) -> int:
    """The longest sequence that fits ``gpu_id`` at the request's batch size.

    Bounded by ``limit`` (default: the model's ``max_position_embeddings``).
    """
    est = estimate(request)
    upper = limit or est.arch.max_position_embeddings
    return _largest(request, get_gpu(gpu_id), "seq_len", upper)


def gpus_needed(request: EstimateRequest, gpu_id: str, sharding: str = "zero3") -> int | None:
    """Fewest GPUs of ``gpu_id`` that hold the request under ``sharding`` (None above 1024)."""
    gpu = get_gpu(gpu_id)
    if _fits(replace(request, sharding="none", num_gpus=1), gpu):
        return 1
    n = 2
    while n <= MAX_SEARCH_GPUS:
        if _fits(request, gpu, sharding=sharding, num_gpus=n):
            lo, hi = n // 2, n
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid > 1 and _fits(request, gpu, sharding=sharding, num_gpus=mid):
                    hi = mid
                else:
                    lo = mid
            return hi
        n *= 2
    return None


@dataclass(frozen=True)
class Capacity:
    """One row of a capacity query."""

    gpu: str
    name: str
    usable_bytes: int
    fits: bool
    headroom_bytes: int
    max_batch_size: int
    max_seq_len: int
    gpus_needed: int | None


def capacity(request: EstimateRequest, gpu_ids: list[str] | None = None, sharding: str = "zero3") -> list[Capacity]:
    """For every catalog GPU (or ``gpu_ids``): fit, max batch, max sequence, GPUs needed."""
    est: Estimate = estimate(request)
    seq_limit = est.arch.max_position_embeddings
    batch_polys = _phase_polynomials(request, "batch_size")
    seq_polys = _phase_polynomials(request, "seq_len")
    rows = []
    for fit in fit_table(est.peak_bytes, gpu_ids):
        gpu = get_gpu(fit.gpu)
        rows.append(Capacity(
            gpu=gpu.id, name=gpu.name, usable_bytes=gpu.usable_bytes, fits=fit.fits,
            headroom_bytes=fit.headroom_bytes,
            max_batch_size=_largest(request, gpu, "batch_size", MAX_BATCH, batch_polys),
            max_seq_len=_largest(request, gpu, "seq_len", seq_limit, seq_polys),
            gpus_needed=gpus_needed(request, gpu.id, sharding) if request.method != "inference" else None,
        ))
    return rows
