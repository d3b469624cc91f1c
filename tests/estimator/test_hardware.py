"""Hardware fit: max batch / sequence are the largest that fit, GPUs needed under ZeRO-3."""

from dataclasses import replace

import pytest

from tunefit.estimator import (
    EstimateRequest,
    capacity,
    estimate,
    fit_table,
    get_gpu,
    gpus_needed,
    max_batch_size,
    max_seq_len,
)

CASES = [
    ("llama-2-7b", "qlora", "rtx-4090"),
    ("llama-3-8b", "lora", "a100-80gb"),
    ("mistral-7b", "qlora", "l4"),
    ("qwen2.5-0.5b", "full", "rtx-3060-12gb"),
]


@pytest.mark.parametrize("model,method,gpu", CASES, ids=[f"{m}-{x}-{g}" for m, x, g in CASES])
def test_max_batch_is_the_largest_that_fits(model, method, gpu):
    req = EstimateRequest(model, method=method, seq_len=1024)
    usable = get_gpu(gpu).usable_bytes
    mb = max_batch_size(req, gpu)
    assert mb >= 1
    assert estimate(replace(req, batch_size=mb)).peak_bytes <= usable
    assert estimate(replace(req, batch_size=mb + 1)).peak_bytes > usable


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_max_seq_is_the_longest_that_fits(attn):
    req = EstimateRequest("llama-2-7b", method="lora", attn_implementation=attn)
    ms = max_seq_len(req, "rtx-4090", limit=1_000_000)
    usable = get_gpu("rtx-4090").usable_bytes
    assert estimate(replace(req, seq_len=ms)).peak_bytes <= usable < estimate(replace(req, seq_len=ms + 1)).peak_bytes


def test_too_big_model_fits_no_batch():
    req = EstimateRequest("llama-2-70b", method="full")
    assert max_batch_size(req, "rtx-4090") == 0


def test_gpus_needed_under_zero3():
    req = EstimateRequest("llama-2-70b", method="full", seq_len=1024)
    n = gpus_needed(req, "a100-80gb")
    usable = get_gpu("a100-80gb").usable_bytes
    assert n is not None and n > 1
    assert estimate(replace(req, sharding="zero3", num_gpus=n)).peak_bytes <= usable
    assert estimate(replace(req, sharding="zero3", num_gpus=n - 1)).peak_bytes > usable


def test_fit_table_headroom_sign_matches_fits():
    rows = fit_table(20 * 2**30)
    assert rows and all(r.fits == (r.headroom_bytes >= 0) for r in rows)
    assert {r.gpu for r in rows if r.fits} >= {"a100-80gb", "h100-sxm-80gb"}
    assert "rtx-3060-12gb" not in {r.gpu for r in rows if r.fits}


def test_fits_document_is_fit_table_as_json():
    from dataclasses import asdict

    from tunefit.estimator.document import fits_document

    peak = 20 * 2**30
    assert fits_document(peak, None) == [asdict(row) for row in fit_table(peak)]
    usable = get_gpu("rtx-4090").usable_bytes
    assert fits_document(peak, ["rtx-4090"]) == [{"gpu": "rtx-4090", "fits": True, "headroom_bytes": usable - peak}]
    assert usable > peak


def test_capacity_rows_cover_the_catalog():
    rows = capacity(EstimateRequest("llama-2-7b", method="qlora"))
    assert len(rows) >= 20
    for r in rows:
        assert r.fits == (r.max_batch_size >= 1)


def _exact_largest(req, gpu, field, upper):
    """Reference: bisection on exact estimates only (no fitted curve)."""
    usable = get_gpu(gpu).usable_bytes

    def fits(x):
        return estimate(replace(req, **{field: x})).peak_bytes <= usable

    lo, hi = 0, upper + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _exact_gpus_needed(req, gpu, sharding):
    usable = get_gpu(gpu).usable_bytes
    if estimate(req).peak_bytes <= usable:
        return 1
    def fits(n):
        return estimate(replace(req, sharding=sharding, num_gpus=n)).peak_bytes <= usable

    if not fits(1024):
        return None
    lo, hi = 1, 1024  # per-GPU bytes fall as N grows: bisect for the first N that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


SWEEP_CASES = {
    "qlora-7b-sdpa-cuda": EstimateRequest("llama-2-7b", method="qlora", seq_len=2048),
    "lora-8b-eager-cuda": EstimateRequest("llama-3-8b", method="lora", attn_implementation="eager", seq_len=1024),
    "full-0.5b-cpu-fp32": EstimateRequest("qwen2.5-0.5b", method="full", dtype="fp32", device="cpu", seq_len=512),
    "full-13b-gc": EstimateRequest("llama-2-13b", method="full", gradient_checkpointing=True, seq_len=4096),
    "inference-mixtral-eager": EstimateRequest("mixtral-8x7b", method="inference", attn_implementation="eager"),
    "full-70b-adam8bit": EstimateRequest("llama-2-70b", method="full", optimizer="adamw_8bit", batch_size=2),
    # a sliding window (4,096): the sequence search works piece by piece, below and past it
    "qlora-mistral-window": EstimateRequest("mistral-7b", method="qlora", seq_len=777),
    "lora-mistral-past-window": EstimateRequest("mistral-7b", method="lora", seq_len=6000, batch_size=2),
}


@pytest.mark.parametrize("req", SWEEP_CASES.values(), ids=SWEEP_CASES.keys())
@pytest.mark.parametrize("sharding", ["zero3", "zero2"])
def test_capacity_sweep_equals_exact_search(req, sharding):
    """The curve-solved sweep must give what bisection on exact estimates gives, GPU by GPU."""
    seq_limit = estimate(req).arch.max_position_embeddings
    for row in capacity(req, sharding=sharding):
        assert row.max_batch_size == _exact_largest(req, row.gpu, "batch_size", 2**20), row.gpu
        assert row.max_seq_len == _exact_largest(req, row.gpu, "seq_len", seq_limit), row.gpu
        if req.method == "inference":
            assert row.gpus_needed is None
        else:
            assert row.gpus_needed == _exact_gpus_needed(req, row.gpu, sharding), row.gpu


@pytest.mark.parametrize("model", ["mistral-7b", "llama-2-7b"], ids=["sliding-window", "plain"])
def test_a_capacity_query_estimates_each_setting_once(model, monkeypatch):
    from tunefit.estimator import hardware

    tried = []
    real = hardware.estimate
    monkeypatch.setattr(hardware, "estimate", lambda r: tried.append((r.batch_size, r.seq_len, r.sharding,
                                                                        r.num_gpus)) or real(r))
    request = EstimateRequest("mistral-7b" if model == "mistral-7b" else model, method="qlora", seq_len=777)
    rows = capacity(request)
    repeated = {t for t in tried if tried.count(t) > 1}
    # Only the points the curves are fitted and checked at (hardware._solve: batch 1, 2, 3, 64;
    # sequence 1, 2, 3, 4096; GPUs 2, 4, 8) and the request itself may be estimated twice (once
    # for a curve, once by a search); every point a search tries is estimated once.
    fit_points = 4 + 4 + 3 + 1
    assert len(repeated) <= fit_points, sorted(repeated)
    assert len(rows) == 24


@pytest.mark.parametrize("rows,kept", [
    (((1.0, 2.0, 3.0), (0.5, 2.0, 1.0)), {(1.0, 2.0, 3.0)}),
    (((1.0, 0.0, 3.0), (5.0, 1.0, 0.0)), {(1.0, 0.0, 3.0), (5.0, 1.0, 0.0)}),  # they cross: both stay
    (((2.0, 2.0), (2.0, 2.0), (1.0, 3.0)), {(2.0, 2.0), (1.0, 3.0)}),
    (((-1.0, 4.0), (0.0, 4.0)), {(0.0, 4.0)}),
], ids=["dominated", "crossing", "duplicate", "negative-constant"])
def test_dominated_moments_are_dropped_from_a_curve(rows, kept):
    from tunefit.estimator.hardware import _undominated

    assert set(_undominated(rows)) == kept
