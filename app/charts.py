"""Server-rendered SVG charts: every coordinate computed here, templates only place them.

No chart library and no CDN: a stacked horizontal bar per row (a phase, a method), segments
grouped by kind of memory, an axis in GiB (2^30 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from estimator.units import GIB

# Breakdown terms grouped the way the result page names them, with a colour each.
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Weights", ("weights_bytes", "quantized_weights_bytes"), "#4e79a7"),
    ("Quant constants", ("quant_constants_bytes",), "#a0cbe8"),
    ("Adapters", ("adapter_bytes",), "#59a14f"),
    ("Gradients", ("gradients_bytes",), "#f28e2b"),
    ("Optimizer", ("optimizer_bytes", "optimizer_step_temp_bytes"), "#e15759"),
    ("Activations", ("activations_bytes", "working_bytes"), "#b07aa1"),
    ("Logits", ("logits_bytes",), "#edc948"),
    ("KV cache", ("kv_cache_bytes",), "#76b7b2"),
    ("Runtime", ("cuda_context_bytes", "allocator_slack_bytes"), "#9c755f"),
)
WIDTH = 640  # px of the plot area (the SVG scales to its container)
LABEL_WIDTH = 130
ROW_HEIGHT = 28
ROW_GAP = 10
AXIS_HEIGHT = 28


def gib_text(n_bytes: float) -> str:
    """Bytes as a GiB figure for display (the unit is printed beside it)."""
    return f"{n_bytes / GIB:,.2f}"


def grouped(terms: dict[str, int]) -> list[tuple[str, int, str]]:
    """(group, bytes, colour) for each group with bytes, in display order."""
    out = []
    for label, keys, colour in GROUPS:
        total = sum(terms.get(k, 0) for k in keys)
        if total:
            out.append((label, total, colour))
    return out


@dataclass(frozen=True)
class Segment:
    label: str
    bytes: int
    gib: str
    x: float
    width: float
    colour: str


@dataclass(frozen=True)
class Row:
    label: str
    gib: str
    y: float
    label_y: float
    highlight: bool
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class StackedChart:
    title: str
    width: int
    height: int
    plot_x: int
    row_height: int
    axis_y: float
    rows: tuple[Row, ...]
    ticks: tuple[Tick, ...]
    legend: tuple[tuple[str, str], ...]  # (label, colour) of the groups present


def _nice_step(max_gib: float) -> float:
    """A 1-2-5 tick step giving about five ticks up to ``max_gib``."""
    raw = max(max_gib, 1e-9) / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def stacked_chart(title: str, rows: list[tuple[str, dict[str, int]]], highlight: str | None = None) -> StackedChart:
    """One stacked bar per ``(label, terms)`` row, on a shared GiB axis."""
    grouped_rows = [(label, grouped(terms)) for label, terms in rows]
    largest = max((sum(b for _, b, _ in g) for _, g in grouped_rows), default=0) or 1
    step = _nice_step(largest / GIB)
    axis_max = math.ceil(largest / GIB / step) * step * GIB
    scale = WIDTH / axis_max
    chart_rows = []
    for i, (label, groups) in enumerate(grouped_rows):
        y = i * (ROW_HEIGHT + ROW_GAP)
        x = 0.0
        segments = []
        for name, n_bytes, colour in groups:
            width = n_bytes * scale
            segments.append(Segment(name, n_bytes, gib_text(n_bytes), round(LABEL_WIDTH + x, 2), round(width, 2), colour))
            x += width
        total = sum(b for _, b, _ in groups)
        chart_rows.append(Row(label, gib_text(total), y, y + ROW_HEIGHT / 2 + 4, label == highlight, tuple(segments)))
    axis_y = len(rows) * (ROW_HEIGHT + ROW_GAP)
    n_ticks = int(round(axis_max / GIB / step))
    ticks = tuple(Tick(round(LABEL_WIDTH + k * step * GIB * scale, 2), f"{k * step:g}") for k in range(n_ticks + 1))
    present = {name for _, groups in grouped_rows for name, _, _ in groups}
    legend = tuple((label, colour) for label, _, colour in GROUPS if label in present)
    return StackedChart(title, LABEL_WIDTH + WIDTH + 20, int(axis_y + AXIS_HEIGHT), LABEL_WIDTH, ROW_HEIGHT,
                        axis_y, tuple(chart_rows), ticks, legend)
