"""Server-rendered SVG charts: every coordinate computed here, templates only place them.

No chart library and no CDN: a stacked horizontal bar per row (a phase, a method), segments
grouped by kind of memory, an axis in GiB (2^30 bytes).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from tunefit.estimator.units import GIB

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
class StackedRow:
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
    rows: tuple[StackedRow, ...]
    ticks: tuple[Tick, ...]
    legend: tuple[tuple[str, str], ...]  # (label, colour) of the groups present

    @property
    def tick_label_y(self) -> float:
        return self.axis_y + 16

    @property
    def row_label_x(self) -> int:
        return self.plot_x - 8


def _nice_step(max_units: float) -> float:
    """A 1-2-5 tick step giving about five ticks up to ``max_units``."""
    raw = max(max_units, 1e-9) / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


BINARY_UNITS = (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10))


def axis_unit(largest_bytes: float) -> tuple[str, int]:
    """The binary unit an axis up to ``largest_bytes`` is labelled in: the largest that is at most it."""
    return next(((u, size) for u, size in BINARY_UNITS if largest_bytes >= size), BINARY_UNITS[-1])


def stacked_chart(title: str, rows: list[tuple[str, dict[str, int]]], highlight: str | None = None) -> StackedChart:
    """One stacked bar per ``(label, terms)`` row, on a shared axis in the binary unit that fits
    its largest bar (:func:`axis_unit`), each tick labelled with it."""
    grouped_rows = [(label, grouped(terms)) for label, terms in rows]
    largest = max((sum(b for _, b, _ in g) for _, g in grouped_rows), default=0) or 1
    unit, unit_bytes = axis_unit(largest)
    step = _nice_step(largest / unit_bytes)
    axis_max = math.ceil(largest / unit_bytes / step) * step * unit_bytes
    scale = WIDTH / axis_max
    chart_rows = []
    for i, (label, groups) in enumerate(grouped_rows):
        y = i * (ROW_HEIGHT + ROW_GAP)
        x = 0.0
        segments = []
        for name, n_bytes, colour in groups:
            width = n_bytes * scale
            segments.append(Segment(name, n_bytes, gib_text(n_bytes), round(LABEL_WIDTH + x, 2), round(width, 2),
                                    colour))
            x += width
        total = sum(b for _, b, _ in groups)
        chart_rows.append(StackedRow(label, gib_text(total), y, y + ROW_HEIGHT / 2 + 4, label == highlight,
                                     tuple(segments)))
    axis_y = len(rows) * (ROW_HEIGHT + ROW_GAP)
    n_ticks = int(round(axis_max / unit_bytes / step))
    ticks = tuple(Tick(round(LABEL_WIDTH + k * step * unit_bytes * scale, 2), f"{k * step:g} {unit}" if k else "0")
                  for k in range(n_ticks + 1))
    present = {name for _, groups in grouped_rows for name, _, _ in groups}
    legend = tuple((label, colour) for label, _, colour in GROUPS if label in present)
    return StackedChart(title, LABEL_WIDTH + WIDTH + 20, int(axis_y + AXIS_HEIGHT), LABEL_WIDTH, ROW_HEIGHT,
                        axis_y, tuple(chart_rows), ticks, legend)


# ---- measured vs predicted ------------------------------------------------------------------------

SCATTER_SIZE = 560
SCATTER_PAD = 76
# a tick label's width at most (px at font-size 12): ticks never come closer than this
TICK_MIN_GAP = 64
METHOD_COLOURS = {"full": "#e15759", "lora": "#59a14f", "qlora": "#4e79a7", "inference": "#b07aa1"}


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    colour: str
    title: str
    href: str


@dataclass(frozen=True)
class Scatter:
    size: int
    pad: int
    points: tuple[Point, ...]
    ticks: tuple[tuple[float, float, str], ...]  # (x on the bottom axis, y on the left axis, label)
    diagonal: tuple[float, float, float, float]  # the y = x line
    legend: tuple[tuple[str, str], ...]
    tick_label_y: float  # baseline of the bottom axis' labels
    tick_label_x: float  # right edge of the left axis' labels
    middle: float
    title_y: float


def _log_position(value: float, low: float, high: float) -> float:
    span = math.log2(high) - math.log2(low)
    return SCATTER_PAD + (math.log2(max(value, low)) - math.log2(low)) / span * (SCATTER_SIZE - 2 * SCATTER_PAD)


def binary_ticks(low_bytes: float, high_bytes: float, length_px: float) -> tuple[int, int, list[int]]:
    """An axis over ``[low_bytes, high_bytes]`` in powers of two: its ends (powers of two around
    the data) and the ticks, every ``k``-th power of two with ``k`` the smallest step in
    (1, 2, 5, 10) that keeps neighbouring labels :data:`TICK_MIN_GAP` px apart on ``length_px``;
    the ticks start at a power of 1024 where one falls in range, so the labels read 1 KiB, 1 MiB ..."""
    low_exp = math.floor(math.log2(max(low_bytes, 1)))
    high_exp = max(math.ceil(math.log2(max(high_bytes, 1))), low_exp + 1)
    span = high_exp - low_exp
    step = next(k for k in (1, 2, 5, 10, 20, 40) if length_px * k / span >= TICK_MIN_GAP or k == 40)
    anchor = next((e for e in range(low_exp, high_exp + 1) if e % 10 == 0), low_exp)
    first = anchor - ((anchor - low_exp) // step) * step
    return 2**low_exp, 2**high_exp, [2**e for e in range(first, high_exp + 1, step)]


def scatter(points: list[tuple[int, int, str, str, str]]) -> Scatter:
    """Predicted (y) against measured (x), log-log, one colour per method; ``points`` holds
    ``(measured_bytes, predicted_bytes, method, title, href)``; axes in powers of two (:func:`binary_ticks`)."""
    values = [v for m, p, *_ in points for v in (m, p) if v > 0] or [GIB]
    low, high, tick_values = binary_ticks(min(values), max(values), SCATTER_SIZE - 2 * SCATTER_PAD)
    top = SCATTER_SIZE - SCATTER_PAD
    placed = tuple(
        Point(round(_log_position(m, low, high), 1), round(SCATTER_SIZE - _log_position(p, low, high), 1),
              METHOD_COLOURS.get(method, "#888"), title, href)
        for m, p, method, title, href in points)
    ticks = [(round(_log_position(v, low, high), 1), round(SCATTER_SIZE - _log_position(v, low, high), 1),
              bytes_label(v)) for v in tick_values]
    present = sorted({method for _, _, method, _, _ in points})
    return Scatter(SCATTER_SIZE, SCATTER_PAD, placed, tuple(ticks),
                   (SCATTER_PAD, top, top, SCATTER_PAD), tuple((m, METHOD_COLOURS.get(m, "#888")) for m in present),
                   tick_label_y=top + 16, tick_label_x=SCATTER_PAD - 4, middle=SCATTER_SIZE / 2,
                   title_y=SCATTER_SIZE - 8)


def bytes_label(n: float) -> str:
    """A power-of-two byte count in binary units: 1 KiB, 32 MiB, 1 TiB."""
    for unit, size in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g} B"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int

    @property
    def centre(self) -> float:
        return round(self.x + self.width / 2, 1)


@dataclass(frozen=True)
class Histogram:
    title: str
    width: int
    height: int
    colour: str
    bars: tuple[Bar, ...]
    edges: tuple[Tick, ...]  # the bins' inner edges (%), labelled under the bars' boundaries

    @property
    def label_y(self) -> int:
        return self.height - 6


HIST_BINS = (-20, -10, -5, -3, -1, 0, 1, 3, 5, 10, 20)  # error % bin edges; outer bins open


def histogram(title: str, errors_percent: list[float], colour: str) -> Histogram:
    """Counts of signed errors (%) per bin, as bars."""
    edges = [-math.inf, *HIST_BINS, math.inf]
    bins = list(itertools.pairwise(edges))
    counts = [sum(1 for e in errors_percent if lo <= e < hi) for lo, hi in bins]
    width, height, bar_w = 480, 150, 480 / len(counts)
    most = max(counts) or 1
    bars = []
    for i, (count, (lo, hi)) in enumerate(zip(counts, bins, strict=True)):
        h = count / most * (height - 44)  # room for the count above and the edges' labels below
        label = f"<{hi:g}" if lo == -math.inf else (f"≥{lo:g}" if hi == math.inf else f"{lo:g}…{hi:g}")
        bars.append(Bar(round(i * bar_w + 2, 1), round(height - 22 - h, 1), round(bar_w - 4, 1), round(h, 1), label,
                        count))
    # one label per edge, at the boundary between two bars: 40 px apart, never overlapping
    labels = tuple(Tick(round(i * bar_w, 1), f"{edge:g}") for i, edge in enumerate(HIST_BINS, start=1))
    return Histogram(title, width, height, colour, tuple(bars), labels)


@dataclass(frozen=True)
class PairedBars:
    """Predicted next to measured, per phase."""

    width: int
    height: int
    groups: tuple[tuple[str, float, tuple[Bar, ...]], ...]  # (phase, label x, (predicted, measured))

    @property
    def label_y(self) -> int:
        return self.height - 8


def paired_bars(pairs: list[tuple[str, int, int]]) -> PairedBars:
    """``pairs``: (phase, predicted bytes, measured bytes)."""
    width, height = 560, 200
    most = max((v for _, p, m in pairs for v in (p, m)), default=1) or 1
    slot = width / max(len(pairs), 1)
    groups = []
    for i, (phase, predicted, measured) in enumerate(pairs):
        bars = []
        for j, value in enumerate((predicted, measured)):
            h = value / most * (height - 40)
            bars.append(Bar(round(i * slot + 10 + j * (slot - 20) / 2, 1), round(height - 25 - h, 1),
                            round((slot - 24) / 2, 1), round(h, 1), gib_text(value), value))
        groups.append((phase, round(i * slot + slot / 2, 1), tuple(bars)))
    return PairedBars(width, height, tuple(groups))


# ---- the paper's figures -------------------------------------------------------------------------

@dataclass(frozen=True)
class LogBars:
    """Horizontal bars on a log10 axis (trainable parameters span orders of magnitude)."""

    width: int
    height: int
    rows: tuple[tuple[str, float, float, str, float, float], ...]  # label, bar y, bar width, value, text y, value x
    ticks: tuple[tuple[float, str], ...]
    plot_x: int
    bar_height: int
    label_x: int
    tick_y: int


def log_bars(items: list[tuple[str, int]]) -> LogBars:
    plot_x, plot_w, bar_h = 170, 440, 26
    top = max((v for _, v in items), default=10)
    decades = max(1, math.ceil(math.log10(max(top, 10))))
    rows = []
    for i, (label, value) in enumerate(items):
        width = round(plot_w * math.log10(max(value, 1)) / decades, 1)
        y = i * (bar_h + 10)
        rows.append((label, y, width, f"{value:,}", y + 17, plot_x + width + 6))
    ticks = tuple((round(plot_x + plot_w * k / decades, 1), f"10^{k}") for k in range(decades + 1))
    height = len(items) * (bar_h + 10) + 30
    return LogBars(plot_x + plot_w + 120, height, tuple(rows), ticks, plot_x, bar_h, plot_x - 8, height - 6)


@dataclass(frozen=True)
class Curves:
    width: int
    height: int
    lines: tuple[tuple[str, str, str], ...]  # (label, colour, svg points)
    y_max_label: str


def loss_curves(series: dict[str, list[float]], colours: dict[str, str]) -> Curves:
    """Training-loss curves on a log-scaled loss axis."""
    width, height, pad = 560, 240, 30
    values = [v for s in series.values() for v in s if v > 0] or [1.0]
    low, high = math.log10(min(values)), math.log10(max(values))
    span = (high - low) or 1.0
    lines = []
    for name, losses in series.items():
        n = max(len(losses) - 1, 1)
        pts = " ".join(f"{pad + (width - 2 * pad) * i / n:.1f},"
                       f"{pad + (height - 2 * pad) * (high - math.log10(max(v, 1e-12))) / span:.1f}"
                       for i, v in enumerate(losses))
        lines.append((name, colours.get(name, "#888"), pts))
    return Curves(width, height, tuple(lines), f"{max(values):.3g}")
