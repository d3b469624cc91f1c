"""The charts' axes read in binary units: powers of two, labelled 1 KiB ... 1 TiB, never closer
than a label's width."""

import math

import pytest

from tunefit.app.web.charts import (
    HIST_BINS,
    SCATTER_PAD,
    SCATTER_SIZE,
    TICK_MIN_GAP,
    binary_ticks,
    bytes_label,
    histogram,
    scatter,
    stacked_chart,
)

AXIS_PX = SCATTER_SIZE - 2 * SCATTER_PAD
RANGES = {
    "kib-to-tib": (2_000, 2 * 10**12),
    "a-tiny-model": (300_000, 4 * 10**9),
    "within-one-unit": (1_000_000, 3_000_000),
    "gib-only": (5 * 10**8, 7 * 10**9),
    "one-value": (2**30, 2**30),
}


@pytest.mark.parametrize("low,high", RANGES.values(), ids=RANGES.keys())
def test_ticks_are_powers_of_two_that_never_overlap(low, high):
    axis_low, axis_high, ticks = binary_ticks(low, high, AXIS_PX)
    assert axis_low <= low and high <= axis_high
    assert len(ticks) >= 2
    assert all(t == 2 ** round(math.log2(t)) and axis_low <= t <= axis_high for t in ticks)
    span = math.log2(axis_high) - math.log2(axis_low)
    gaps = [AXIS_PX * (math.log2(b) - math.log2(a)) / span for a, b in zip(ticks, ticks[1:], strict=False)]
    assert min(gaps) >= TICK_MIN_GAP
    labels = [bytes_label(t) for t in ticks]
    assert len(set(labels)) == len(labels)
    assert all(label.split()[-1] in ("B", "KiB", "MiB", "GiB", "TiB") for label in labels)


def test_the_scatter_places_points_on_its_binary_axes():
    chart = scatter([(2**20, 2**20, "lora", "a", "/a"), (2**30, 2**31, "full", "b", "/b")])
    labels = [label for _, _, label in chart.ticks]
    assert "1 MiB" in labels and "1 GiB" in labels
    first, second = chart.points
    assert SCATTER_SIZE - first.y == first.x  # predicted = measured: on the diagonal
    assert second.x < SCATTER_SIZE - second.y  # predicted above measured: above the diagonal


def test_the_histogram_labels_its_edges_apart_and_counts_every_error():
    errors = [-25.0, -4.0, -0.5, 0.0, 0.2, 0.2, 2.0, 30.0]
    chart = histogram("all", errors, "#000")
    assert sum(b.count for b in chart.bars) == len(errors)
    assert [e.label for e in chart.edges] == [f"{edge:g}" for edge in HIST_BINS]
    xs = [e.x for e in chart.edges]
    assert min(b - a for a, b in zip(xs, xs[1:], strict=False)) >= 36  # a label's width at 11 px
    assert all(0 < x < chart.width for x in xs)


@pytest.mark.parametrize("peak_bytes,unit", [(3 * 2**20, "MiB"), (20 * 2**30, "GiB"), (700, "KiB"),
                                             (3 * 2**40, "TiB")], ids=["mib", "gib", "tiny", "tib"])
def test_a_stacked_chart_labels_its_axis_in_the_unit_of_its_largest_bar(peak_bytes, unit):
    chart = stacked_chart("peak", [("peak", {"weights_bytes": peak_bytes})])
    labels = [t.label for t in chart.ticks]
    assert labels[0] == "0" and all(label.endswith(f" {unit}") for label in labels[1:])
    assert 3 <= len(labels) <= 11 and len(set(labels)) == len(labels)
    xs = [t.x for t in chart.ticks]
    assert min(b - a for a, b in zip(xs, xs[1:], strict=False)) >= TICK_MIN_GAP  # never overlapping
    assert chart.rows[0].segments[0].x + chart.rows[0].segments[0].width <= xs[-1] + 0.01  # the bar fits the axis
