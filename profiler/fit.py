"""A training step's memory as exact polynomials in the batch size b and the sequence length s.

Every moment of a step (the live bytes just after one op has allocated its outputs) is a sum of
tensor sizes, each a product of the model's dimensions with at most b, s and s² (a score matrix
``b·heads·s·s``, a causal mask ``s·s``, rotary tables ``s·d``): a polynomial over the basis
``1, b, s, b·s, s², b·s²``. Six simulations on the grid ``b ∈ {2, 3} × s ∈ {s1, s2, s3}`` (a grid
on which that basis is unisolvent) determine each moment's polynomial exactly (rational
arithmetic, :class:`fractions.Fraction`); a seventh shape off the grid checks it. A batch of one
row takes another path through the libraries (transformers skips an ``expand`` and the loss a
``clone`` for it), so b = 1 has its own fit over ``1, s, s²`` (three lengths, and a check).

A moment's place in the step is its index among the ops of its phase, which is the same at every
shape as long as the code takes the same path; where it is not (a kernel switch, a sliding window,
a buffer capped at a fixed size), the fit says so and does not answer. Only the moments that can
be a phase's peak somewhere are kept: a polynomial whose every coefficient is at most another's
is never above it for b, s ≥ 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

Shape = tuple[int, int]  # (batch size, sequence length)
Basis = tuple[tuple[int, int], ...]  # the monomials b^i s^j, as (i, j)
BATCHED_BASIS: Basis = ((0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2))
SINGLE_ROW_BASIS: Basis = ((0, 0), (0, 1), (0, 2))
SAMPLE_BATCHES = (2, 3)
CHECK_BATCH = 4


def sample_shapes(lengths: tuple[int, int, int]) -> tuple[Shape, ...]:
    """Every shape a fit simulates: the batched grid, the single-row lengths, then the two checks."""
    batched = tuple((b, s) for s in lengths for b in SAMPLE_BATCHES)
    return (*batched, *((1, s) for s in lengths), *check_shapes(lengths))


def check_shapes(lengths: tuple[int, int, int]) -> tuple[Shape, Shape]:
    """Off the grid: a larger batch at a longer sequence, and one row at that length."""
    longer = 2 * lengths[-1] - lengths[-2]
    return (CHECK_BATCH, longer), (1, longer)


@dataclass(frozen=True)
class Segment:
    """One phase of one step as simulated at one shape: the live bytes after each op, and at its
    end (after the step's collection)."""

    phase: str
    step: int
    moments: tuple[int, ...]
    end_bytes: int


@dataclass(frozen=True)
class Poly:
    """``sum(c · b^i · s^j)`` over its ``basis``, exact."""

    coefficients: tuple[Fraction, ...]
    basis: Basis

    def __call__(self, b: int, s: int) -> int:
        value = sum(c * b**i * s**j for c, (i, j) in zip(self.coefficients, self.basis, strict=True))
        return int(value)  # a sum of tensor sizes: an integer wherever the fit holds

    def dominated_by(self, other: Poly) -> bool:
        """Whether ``other`` is at least this at every b, s ≥ 1 (coefficient by coefficient)."""
        return all(o >= c for c, o in zip(self.coefficients, other.coefficients, strict=True))


@dataclass(frozen=True)
class FittedSegment:
    phase: str
    step: int
    peaks: tuple[Poly, ...]  # the moments that can be the phase's peak
    end: Poly

    def peak(self, b: int, s: int) -> int:
        return max(p(b, s) for p in self.peaks)


class FitError(ValueError):
    """The simulations do not line up, or the fit misses the check shape: say so, do not answer."""


@dataclass(frozen=True)
class Fit:
    """A setting's step, phase by phase, for any (b, s) where it holds: ``batched`` for b ≥ 2,
    ``single_row`` for b = 1."""

    batched: tuple[FittedSegment, ...]
    single_row: tuple[FittedSegment, ...]

    def segments(self, b: int) -> tuple[FittedSegment, ...]:
        return self.single_row if b == 1 else self.batched

    def phase_peaks(self, b: int, s: int) -> dict[str, int]:
        """Each phase's peak in the steady state (step two onwards where there is one) and the
        load's, as ``profiler.run.summarize`` reports a simulation."""
        segments = self.segments(b)
        last = max(seg.step for seg in segments)
        peaks: dict[str, int] = {}
        for seg in segments:
            if seg.step >= min(2, last) or seg.phase == "load":
                peaks[seg.phase] = max(peaks.get(seg.phase, 0), seg.peak(b, s))
        return peaks

    def phase_ends(self, b: int, s: int) -> dict[str, int]:
        """Bytes alive at the end of each phase of the last step (and of the load)."""
        segments = self.segments(b)
        last = max(seg.step for seg in segments)
        return {seg.phase: seg.end(b, s) for seg in segments if seg.step in (0, last)}

    def peak(self, b: int, s: int) -> tuple[str, int]:
        """The phase of the peak, and the peak."""
        peaks = self.phase_peaks(b, s)
        phase = max(peaks, key=lambda name: peaks[name])
        return phase, peaks[phase]


@lru_cache(maxsize=16)
def _inverse(shapes: tuple[Shape, ...], basis: Basis) -> tuple[tuple[Fraction, ...], ...]:
    """The inverse of ``basis`` evaluated at ``shapes`` (Gauss-Jordan, exact)."""
    n = len(basis)
    rows = [[Fraction(b**i * s**j) for i, j in basis] + [Fraction(int(k == r)) for k in range(n)]
            for r, (b, s) in enumerate(shapes)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col], strict=True)]
    return tuple(tuple(row[n:]) for row in rows)


def _solve(inverse: tuple[tuple[Fraction, ...], ...], basis: Basis, values: Sequence[int]) -> Poly:
    return Poly(tuple(sum((a * v for a, v in zip(row, values, strict=True)), Fraction(0)) for row in inverse), basis)


def fit(samples: Mapping[Shape, Sequence[Segment]], lengths: tuple[int, int, int]) -> Fit:
    """The fit of the simulations at :func:`sample_shapes` (``lengths``), each part checked against
    its check shape: every phase's peak and end must come out exactly. Moment by moment where the
    op sequence is the same at every shape; where it is not (a loop over chunks of the sequence,
    as the torch reference path of a linear-attention layer runs), the phases' peaks themselves,
    which the checks then hold to the same exactness. Raises :class:`FitError`."""
    batched_check, single_check = check_shapes(lengths)
    batched = [(b, s) for s in lengths for b in SAMPLE_BATCHES]
    single = [(1, s) for s in lengths]
    return Fit(_fit_part(samples, batched, batched_check, BATCHED_BASIS),
               _fit_part(samples, single, single_check, SINGLE_ROW_BASIS))


def _fit_part(samples: Mapping[Shape, Sequence[Segment]], shapes: list[Shape], check: Shape,
              basis: Basis) -> tuple[FittedSegment, ...]:
    runs = [samples[shape] for shape in shapes]
    _same_phases(runs + [samples[check]])
    by_moment = _aligned(runs + [samples[check]])
    inverse = _inverse(tuple(shapes), basis)
    segments = []
    for k, first in enumerate(runs[0]):
        per_shape = [run[k] for run in runs]
        series = ([[seg.moments[i] for seg in per_shape] for i in range(len(first.moments))] if by_moment
                  else [[max(seg.moments) for seg in per_shape]])
        polys = {_solve(inverse, basis, values) for values in series}
        end = _solve(inverse, basis, [seg.end_bytes for seg in per_shape])
        segments.append(FittedSegment(first.phase, first.step, _undominated(polys), end))
    _check(segments, samples[check], check)
    return tuple(segments)


def _same_phases(runs: list[Sequence[Segment]]) -> None:
    reference = [(seg.phase, seg.step) for seg in runs[0]]
    if any([(seg.phase, seg.step) for seg in run] != reference for run in runs[1:]):
        raise FitError("the step runs other phases at another shape")


def _aligned(runs: list[Sequence[Segment]]) -> bool:
    """Whether every run takes as many ops in each phase: the same code path, moment by moment."""
    reference = [len(seg.moments) for seg in runs[0]]
    return all([len(seg.moments) for seg in run] == reference for run in runs[1:])


def _undominated(polys: set[Poly]) -> tuple[Poly, ...]:
    """The polynomials no other one is at least everywhere (b, s ≥ 1)."""
    far = (64, 131072)  # order candidates by a large shape: the likely maxima first
    kept: list[Poly] = []
    for p in sorted(polys, key=lambda q: (q(*far), q.coefficients), reverse=True):
        if not any(p.dominated_by(k) for k in kept):
            kept = [k for k in kept if not k.dominated_by(p)] + [p]
    return tuple(kept)


def _check(fitted: list[FittedSegment], segments: Sequence[Segment], shape: Shape) -> None:
    b, s = shape
    for got, seg in zip(fitted, segments, strict=True):
        if got.peak(b, s) != max(seg.moments) or got.end(b, s) != seg.end_bytes:
            raise FitError(f"the fit misses the check shape {b}x{s} in {seg.phase} of step {seg.step} "
                           f"(peak {got.peak(b, s):,} fitted, {max(seg.moments):,} simulated)")


@dataclass(frozen=True)
class Piecewise:
    """Fits that each hold from their start length on, up to the next one's: a sliding window or an
    attention chunk is a boundary (transformers builds a mask once the sequence reaches it)."""

    pieces: tuple[tuple[int, Fit], ...]  # (first length it holds at, its fit), by start

    def at(self, s: int) -> Fit:
        return next(f for start, f in reversed(self.pieces) if s >= start)

    def phase_peaks(self, b: int, s: int) -> dict[str, int]:
        return self.at(s).phase_peaks(b, s)

    def phase_ends(self, b: int, s: int) -> dict[str, int]:
        return self.at(s).phase_ends(b, s)


def piece_lengths(start: int, step: int) -> tuple[int, int, int]:
    """The sample lengths of a piece starting at ``start`` (0: the first piece, from ``step`` on)."""
    first = start or step
    return first, first + step, first + 2 * step
