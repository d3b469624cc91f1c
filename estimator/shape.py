"""A step's moments as exact integer polynomials in the micro-batch ``b`` and sequence length ``s``.

Every byte count the estimator writes for a moment is a sum of whole-byte widths times
products of ``b`` and ``s``: constants (weights, gradients, optimizer state), ``b`` (a
prefill's last-token logits), ``t = b·s`` (streams, saved tensors, logits, the KV cache) and
``b·s²`` (attention matrices). So each term is ``P0(s) + b·P1(s)`` with two quadratics
``P0, P1`` and integer coefficients, and six exact estimates (``b`` in 1, 2 and ``s`` in 1, 2,
3) determine it. The fit is accepted only if every coefficient is an integer and it reproduces
exact estimates at points it was not fitted on; otherwise the caller keeps estimating directly.

Why: the mechanistic formulas cost a hundred Python-level operations per moment, while a
fitted polynomial costs a few multiplications per term; sweeps over batch and sequence length
(the form, the capacity search, a service answering many shapes of one setting) reuse one fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PROBE_BATCHES = (1, 2)
PROBE_SEQS = (1, 2, 3)
# Points the fit must reproduce exactly, away from the probes.
CHECK_POINTS = ((3, 7), (5, 4), (1, 11))

# A term that varies: (key, c0, c1, c2, d0, d1, d2) with
# term = c0 + c1·s + c2·s² + b·(d0 + d1·s + d2·s²)
TermPolynomial = tuple[str, int, int, int, int, int, int]


class MomentLike(Protocol):
    """A moment as :func:`fit` reads it (read-only, so a frozen ``estimate.Phase`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def terms(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class ShapePolynomial:
    """Per moment (in order): its phase name, its terms that do not vary with ``b`` and ``s``
    (every term, in order, the varying ones as placeholders) and the polynomials of those that do."""

    names: tuple[str, ...]
    constants: tuple[dict[str, int], ...]
    varying: tuple[tuple[TermPolynomial, ...], ...]
    totals: tuple[TermPolynomial, ...]  # each moment's sum of terms (key: its phase name)

    def totals_at(self, b: int, s: int) -> list[int]:
        """Allocated bytes of every moment at batch ``b``, sequence ``s``."""
        s2 = s * s
        return [c0 + c1 * s + c2 * s2 + b * (d0 + d1 * s + d2 * s2) for _, c0, c1, c2, d0, d1, d2 in self.totals]

    def terms_at(self, i: int, b: int, s: int) -> dict[str, int]:
        """Terms of moment ``i`` at batch ``b``, sequence ``s`` (exact integers)."""
        s2 = s * s
        terms = self.constants[i].copy()  # assigning an existing key keeps the terms' order
        for key, c0, c1, c2, d0, d1, d2 in self.varying[i]:
            terms[key] = c0 + c1 * s + c2 * s2 + b * (d0 + d1 * s + d2 * s2)
        return terms

    def evaluate(self, b: int, s: int) -> list[tuple[str, dict[str, int]]]:
        """``(phase name, terms)`` of every moment."""
        return [(name, self.terms_at(i, b, s)) for i, name in enumerate(self.names)]


def _integer_quadratic(g1: int, g2: int, g3: int) -> tuple[int, int, int] | None:
    """Integer ``(c0, c1, c2)`` with ``c0 + c1·s + c2·s² = g_s`` for ``s = 1, 2, 3``, or None."""
    c2, odd = divmod(g1 - 2 * g2 + g3, 2)
    if odd:
        return None
    c1 = g2 - g1 - 3 * c2
    return g1 - c1 - c2, c1, c2


def _term(key: str, f1: tuple[int, ...], f2: tuple[int, ...]) -> TermPolynomial | None:
    """The term from its values at ``b = 1`` (``f1``) and ``b = 2`` (``f2``), ``s = 1, 2, 3``:
    ``P1 = f(2, s) - f(1, s)`` and ``P0 = 2·f(1, s) - f(2, s)``."""
    p0 = _integer_quadratic(*(2 * x - y for x, y in zip(f1, f2, strict=True)))
    p1 = _integer_quadratic(*(y - x for x, y in zip(f1, f2, strict=True)))
    if p0 is None or p1 is None:
        return None
    return (key, *p0, *p1)


def fit(moments_at: Callable[[int, int], tuple[MomentLike, ...]]) -> ShapePolynomial | None:
    """Fit the moments that ``moments_at(b, s)`` computes exactly; None if they are not integer
    polynomials of the form above (then nothing is lost: the caller estimates directly)."""
    probes = {(b, s): moments_at(b, s) for b in PROBE_BATCHES for s in PROBE_SEQS}
    reference = probes[1, 1]
    names = tuple(m.name for m in reference)
    keys = [tuple(m.terms) for m in reference]
    for moments in probes.values():
        if tuple(m.name for m in moments) != names or [tuple(m.terms) for m in moments] != keys:
            return None
    constants, varying, totals = [], [], []
    for i, moment_keys in enumerate(keys):
        total = _term(names[i], *(tuple(sum(probes[b, s][i].terms.values()) for s in PROBE_SEQS)
                                  for b in PROBE_BATCHES))
        if total is None:
            return None
        totals.append(total)
        fixed, terms = dict(reference[i].terms), []
        for key in moment_keys:
            f1, f2 = (tuple(probes[b, s][i].terms[key] for s in PROBE_SEQS) for b in PROBE_BATCHES)
            if not all(type(v) is int for v in f1 + f2):
                return None
            if f1 == f2 and f1[0] == f1[1] == f1[2]:
                continue
            term = _term(key, f1, f2)
            if term is None:
                return None
            terms.append(term)
        constants.append(fixed)
        varying.append(tuple(terms))
    polynomial = ShapePolynomial(names, tuple(constants), tuple(varying), tuple(totals))
    for b, s in CHECK_POINTS:
        exact = moments_at(b, s)
        if polynomial.evaluate(b, s) != [(m.name, m.terms) for m in exact]:
            return None
        if polynomial.totals_at(b, s) != [sum(m.terms.values()) for m in exact]:
            return None
    return polynomial
