"""Hardware fit: which GPUs hold a setting, the largest batch and sequence that fit, GPUs needed."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from .catalog import Gpu, get_gpu, gpus
from .errors import EstimateError
from .estimate import ALLOCATOR_SLACK_FRACTION, CUDA_CONTEXT_BYTES, RUNTIME_TERMS, TERMS, Estimate, estimate
from .request import MAX_BATCH, EstimateRequest

MAX_SEARCH_GPUS = 1024


@dataclass(frozen=True)
class GpuFit:
    """Whether ``peak_bytes`` fits one GPU, and the margin (negative when it does not)."""

    gpu: str
    fits: bool
    headroom_bytes: int


def fit_rows(peak_bytes: int, gpu_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """``{gpu, fits, headroom_bytes}`` of a per-GPU peak on each catalog GPU (or on ``gpu_ids``,
    named as given): ``headroom = usable - peak``; it fits when the headroom is not negative.
    Built as the estimate document's ``fits`` directly: every API answer carries them."""
    table = [(g, get_gpu(g).usable_bytes) for g in gpu_ids] if gpu_ids else _usable_bytes()
    return [{"gpu": g, "fits": usable >= peak_bytes, "headroom_bytes": usable - peak_bytes} for g, usable in table]


def fit_table(peak_bytes: int, gpu_ids: list[str] | None = None) -> list[GpuFit]:
    """:func:`fit_rows` as :class:`GpuFit` rows."""
    return [GpuFit(**row) for row in fit_rows(peak_bytes, gpu_ids)]


@lru_cache(maxsize=1)
def _usable_bytes() -> tuple[tuple[str, int], ...]:
    """(id, usable bytes) of every catalog GPU, read once: every estimate document asks."""
    return tuple((g.id, g.usable_bytes) for g in gpus().values())


# Within one capacity query, the peak of each setting tried, so that the searches of the 24 GPUs
# (which try many of the same batch sizes, sequence lengths and GPU counts) estimate each once:
# (the query's request, {changes: peak bytes, or None when the estimator refuses it}).
Changes = tuple[tuple[str, Any], ...]  # sorted (field, value) pairs
_PEAKS: ContextVar[tuple[EstimateRequest, dict[Changes, int | None]] | None] = ContextVar("_PEAKS", default=None)


def _peak(request: EstimateRequest, **changes: Any) -> int | None:
    """Peak bytes of ``request`` with ``changes`` (None when refused), remembered per query."""
    memo = _PEAKS.get()
    known = memo[1] if memo is not None and memo[0] is request else None
    key = tuple(sorted(changes.items()))
    if known is not None and key in known:
        return known[key]
    try:
        peak = estimate(replace(request, **changes)).peak_bytes
    except EstimateError:
        peak = None
    if known is not None:
        known[key] = peak
    return peak


def _fits(request: EstimateRequest, gpu: Gpu, **changes: Any) -> bool:
    peak = _peak(request, **changes)
    return peak is not None and peak <= gpu.usable_bytes


# Every term is rounded up to whole bytes on its own, and the allocator slack once more, so an
# exact estimate may differ from its curve by this many bytes (plus float error, relative).
ROUNDING_BYTES = len(TERMS) + len(RUNTIME_TERMS) + 8
FLOAT_RELATIVE_ERROR = 1e-12
# Where a fitted curve is checked against one more exact estimate: inside the usual range, so
# float64 still holds the byte counts exactly.
CHECK_BATCH = 64
CHECK_SEQ = 4096
CHECK_GPUS = 8


@dataclass(frozen=True)
class _Curve:
    """Allocated bytes of every moment of a step as a function of one integer knob ``x``.

    ``basis(x)`` lists the functions every moment is an exact combination of; ``coefficients``
    holds one row per moment. ``checked`` says whether the curve matched an exact estimate at
    a point it was not fitted on; an unchecked curve is only a starting guess.
    """

    basis: Callable[[float], tuple[float, ...]]
    coefficients: tuple[tuple[float, ...], ...]
    checked: bool

    def allocated(self, x: float) -> float:
        """The largest moment's allocated bytes at ``x``."""
        f = self.basis(x)
        return max(sum(c * v for c, v in zip(row, f)) for row in self.coefficients)


def _tolerance(value: float) -> float:
    return ROUNDING_BYTES + abs(value) * FLOAT_RELATIVE_ERROR


def _undominated(rows: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
    """The rows no other row is at least as large as, coefficient by coefficient. Every basis
    function is >= 0 where a curve is read (``1, x, x²`` for x >= 1; ``1, 1/N`` for N >= 1), so
    such a row is never the largest moment: the maximum, each moment's roots and the GPU count
    read off the curve do not change without it, and each later reading costs a few rows, not
    one per moment of the step."""
    kept: list[tuple[float, ...]] = []
    for row in sorted(set(rows), key=lambda r: tuple(reversed(r)), reverse=True):
        if not any(all(k >= c for k, c in zip(other, row)) for other in kept):
            kept.append(row)
    return tuple(kept)


def _solve(basis: Callable[[float], tuple[float, ...]], points: tuple[int, ...], check_at: int,
           request: EstimateRequest, changes: Callable[[int], dict[str, Any]]) -> _Curve:
    """Fit ``allocated = sum(c_j · basis_j(x))`` per moment through exact estimates at ``points``
    (one per basis function), then check it against an exact estimate at ``check_at``."""
    def moments(x: int) -> list[int]:
        return list(estimate(replace(request, **changes(x))).moment_bytes)

    columns = list(zip(*(moments(x) for x in points)))
    matrix = [basis(x) for x in points]
    curve = _Curve(basis, tuple(_linear_solve(matrix, list(ys)) for ys in columns), checked=False)
    if check_at in points:
        return curve
    try:
        exact = moments(check_at)
    except EstimateError:
        return curve
    f = basis(check_at)
    fitted = [sum(c * v for c, v in zip(row, f)) for row in curve.coefficients]
    checked = all(abs(a - y) <= _tolerance(y) for a, y in zip(fitted, exact))
    return replace(curve, coefficients=_undominated(curve.coefficients), checked=checked)


def _linear_solve(matrix: list[tuple[float, ...]], ys: list[float]) -> tuple[float, ...]:
    """Gauss-Jordan elimination with partial pivoting, for the 2x2 and 3x3 systems of :func:`_solve`."""
    n = len(ys)
    a = [list(row) + [y] for row, y in zip(matrix, ys)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col])]
    return tuple(a[r][n] / a[r][r] for r in range(n))


def _quadratic_curve(request: EstimateRequest, field_name: str, check_at: int, start: int = 1) -> _Curve:
    """Moments in the batch size or the sequence length: every term is a sum of products of
    ``b``, ``s`` and ``s²`` (the eager attention matrix), so each is quadratic in either (fitted at
    ``start`` and the next two values)."""
    return _solve(lambda x: (1.0, x, x * x), (start, start + 1, start + 2), check_at, request,
                  lambda x: {field_name: x})


@dataclass(frozen=True)
class _SeqCurves:
    """Moments in the sequence length: one quadratic below the sliding window (``window`` 0:
    none) and another from it on, where transformers hands attention an explicit mask (a
    different polynomial: ``estimate.step_moments``)."""

    below: _Curve
    above: _Curve | None
    window: int


def _seq_curves(request: EstimateRequest, upper: int) -> _SeqCurves:
    window = estimate(request).arch.sliding_window
    if not window or window + 2 > upper:
        return _SeqCurves(_quadratic_curve(request, "seq_len", CHECK_SEQ), None, 0)
    below = _quadratic_curve(request, "seq_len", min(CHECK_SEQ, window - 1))
    above = _quadratic_curve(request, "seq_len", min(2 * window, upper), start=window)
    return _SeqCurves(below, above, window)


def _largest_seq(request: EstimateRequest, gpu: Gpu, upper: int, curves: _SeqCurves) -> int:
    """Largest sequence length in [1, upper] that fits, piece by piece of ``curves``."""
    if curves.above is None:
        return _largest(request, gpu, "seq_len", upper, curves.below)
    below = _largest(request, gpu, "seq_len", curves.window - 1, curves.below)
    if below < curves.window - 1:
        return below
    return max(below, _largest(request, gpu, "seq_len", upper, curves.above, lower=curves.window))


def _inverse(request: EstimateRequest, sharding: str) -> _Curve:
    """Moments in the GPU count ``N`` under sharding: ``a + c/N`` (ZeRO, arXiv:1910.02054 Fig. 1:
    partitioned states divide by ``N_d``; activations and gathered layers do not)."""
    return _solve(lambda n: (1.0, 1.0 / n), (2, 4), CHECK_GPUS, request,
                  lambda n: {"sharding": sharding, "num_gpus": n})


def _allocator_budget(request: EstimateRequest, gpu: Gpu) -> float:
    """Allocated bytes that leave room for the CUDA context and allocator slack on ``gpu``."""
    if request.device != "cuda":
        return float(gpu.usable_bytes)
    return (gpu.usable_bytes - CUDA_CONTEXT_BYTES) / (1 + ALLOCATOR_SLACK_FRACTION)


def _fits_on_curve(curve: _Curve, x: int, budget: float, request: EstimateRequest, gpu: Gpu,
                   changes: dict[str, Any]) -> bool:
    """Whether ``x`` fits: read off a checked curve when clear of the rounding, else estimated exactly."""
    if curve.checked:
        allocated = curve.allocated(x)
        if abs(budget - allocated) > _tolerance(allocated):
            return allocated < budget
    return _fits(request, gpu, **changes)


def _largest_root(coefficients: tuple[float, ...], budget: float) -> float:
    """Largest real ``x`` with ``c0 + c1·x + c2·x² <= budget`` (all coefficients >= 0 in practice)."""
    c0, c1, c2 = coefficients
    if c0 > budget:
        return 0.0
    if c2 <= 0:
        return math.inf if c1 <= 0 else (budget - c0) / c1
    return (-c1 + math.sqrt(c1 * c1 + 4 * c2 * (budget - c0))) / (2 * c2)


def _largest(request: EstimateRequest, gpu: Gpu, field_name: str, upper: int, curve: _Curve, lower: int = 1) -> int:
    """Largest value of ``field_name`` in [lower, upper] that fits (``lower - 1`` if none does).

    Solves each moment's quadratic for the allocator budget, then walks to the exact answer.
    """
    budget = _allocator_budget(request, gpu)

    def fits(x: int) -> bool:
        return _fits_on_curve(curve, x, budget, request, gpu, {field_name: x})

    if not curve.checked:
        return _bisect_largest(fits, upper, lower)
    root = min(_largest_root(row, budget) for row in curve.coefficients)
    x = int(max(lower, min(root, upper)))
    while x >= lower and not fits(x):
        x -= 1
    while lower <= x < upper and fits(x + 1):
        x += 1
    return x


def _bisect_largest(fits: Callable[[int], bool], upper: int, lower: int = 1) -> int:
    """Largest ``x`` in [lower, upper] with ``fits(x)`` (``lower - 1`` if none), assuming fit is monotone."""
    lo, hi = lower - 1, upper + 1  # fits(lo) holds (taken as given); fits(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def max_batch_size(request: EstimateRequest, gpu_id: str) -> int:
    """The largest micro-batch that fits ``gpu_id`` at the request's sequence length."""
    curve = _quadratic_curve(request, "batch_size", CHECK_BATCH)
    return _largest(request, get_gpu(gpu_id), "batch_size", MAX_BATCH, curve)


def max_seq_len(request: EstimateRequest, gpu_id: str, limit: int | None = None) -> int:
    """The longest sequence that fits ``gpu_id`` at the request's batch size.

    Bounded by ``limit`` (default: the model's ``max_position_embeddings``).
    """
    upper = limit or estimate(request).arch.max_position_embeddings
    return _largest_seq(request, get_gpu(gpu_id), upper, _seq_curves(request, upper))


def gpus_needed(request: EstimateRequest, gpu_id: str, sharding: str = "zero3", curve: _Curve | None = None,
                single_fits: bool | None = None) -> int | None:
    """Fewest GPUs of ``gpu_id`` that hold the request: 1 if it fits unsharded, else the
    smallest ``N >= 2`` under ``sharding``; None when even 1024 do not.

    Per GPU every moment is ``a + c/N``, so ``N = ceil(max c / (budget - a))``, confirmed
    exactly near the boundary. The part that does not shard (activations, DDP's full copies)
    bounds it: if ``a`` alone exceeds the budget no count helps.
    """
    gpu = get_gpu(gpu_id)
    if single_fits is None:
        single_fits = _fits(request, gpu, sharding="none", num_gpus=1)
    if single_fits:
        return 1
    curve = curve or _inverse(request, sharding)
    budget = _allocator_budget(request, gpu)

    def fits(n: int) -> bool:
        return _fits_on_curve(curve, n, budget, request, gpu, {"sharding": sharding, "num_gpus": n})

    if not curve.checked:
        return _doubling_search(fits)
    needed = 2.0
    for a, c in curve.coefficients:
        if a >= budget - _tolerance(a):
            return None if not fits(MAX_SEARCH_GPUS) else _doubling_search(fits)
        needed = max(needed, c / (budget - a))
    n = int(min(math.ceil(needed), MAX_SEARCH_GPUS + 1))
    while n > 2 and fits(n - 1):
        n -= 1
    while n <= MAX_SEARCH_GPUS and not fits(n):
        n += 1
    return n if n <= MAX_SEARCH_GPUS else None


def _doubling_search(fits: Callable[[int], bool]) -> int | None:
    """Smallest ``N`` in [2, 1024] with ``fits(N)``, assuming fit is monotone in ``N``."""
    hi = 2
    while not fits(hi):
        if hi >= MAX_SEARCH_GPUS:
            return None
        hi = min(hi * 2, MAX_SEARCH_GPUS)
    lo = max(hi // 2, 1)  # lo == 1 stands for "fits at 1" being decided already (it does not)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


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
    """For every catalog GPU (or ``gpu_ids``): fit, max batch, max sequence, GPUs needed.

    The curves in ``b``, ``s`` and ``N`` are solved once per request (a handful of exact
    estimates), then each GPU costs arithmetic plus exact checks only near its boundaries.
    """
    token = _PEAKS.set((request, {}))
    try:
        return _capacity_rows(request, gpu_ids, sharding)
    finally:
        _PEAKS.reset(token)


def _capacity_rows(request: EstimateRequest, gpu_ids: list[str] | None, sharding: str) -> list[Capacity]:
    est: Estimate = estimate(request)
    seq_limit = est.arch.max_position_embeddings
    batch_curve = _quadratic_curve(request, "batch_size", CHECK_BATCH)
    seq_curves = _seq_curves(request, seq_limit)
    training = request.method != "inference"
    gpu_curve = _inverse(request, sharding) if training else None
    rows = []
    for fit in fit_table(est.peak_bytes, gpu_ids):
        gpu = get_gpu(fit.gpu)
        needed = gpus_needed(request, gpu.id, sharding, gpu_curve, single_fits=fit.fits) if training else None
        rows.append(Capacity(
            gpu=gpu.id, name=gpu.name, usable_bytes=gpu.usable_bytes, fits=fit.fits,
            headroom_bytes=fit.headroom_bytes,
            max_batch_size=_largest(request, gpu, "batch_size", MAX_BATCH, batch_curve),
            max_seq_len=_largest_seq(request, gpu, seq_limit, seq_curves),
            gpus_needed=needed,
        ))
    return rows
