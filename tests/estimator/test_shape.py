"""The shape polynomial: a fit of a step's moments in batch and sequence length must equal the
formulas everywhere below a sliding window (past it transformers masks explicitly, and estimates
come from the formulas), and must refuse what is not an integer polynomial of its form."""

import importlib
import json
from dataclasses import dataclass, replace

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, QuantSpec, estimate, models, to_document
from tunefit.estimator.estimate import _shape_free, step_plan
from tunefit.estimator.request import normalize, resolve_model
from tunefit.estimator.shape import _integer_quadratic, fit

estimate_module = importlib.import_module("tunefit.estimator.estimate")  # the package exports a function of that name

# (b, s) far from the probes: large shapes, odd ones, one-token ones
POINTS = [(1, 1), (1, 4096), (7, 1), (3, 777), (16, 2048), (64, 8192), (1, 131072), (1024, 1)]

ALL_LINEAR = LoraSpec(r=4, target_modules="all-linear")
SETTINGS = {
    "lora-qv": dict(method="lora"),
    "lora-all-dropout": dict(method="lora", lora=LoraSpec(r=16, target_modules="all-linear", dropout=0.05)),
    "dora-eager": dict(method="lora", lora=LoraSpec(r=8, variant="dora", target_modules="all-linear"),
                       attn_implementation="eager"),
    "qlora": dict(method="qlora", lora=LoraSpec(r=8, target_modules="all-linear")),
    "qlora-fp16-gc": dict(method="qlora", dtype="fp16", gradient_checkpointing=True, lora=ALL_LINEAR),
    "qlora-int8": dict(method="qlora", quant=QuantSpec("int8", False, 64), lora=ALL_LINEAR),
    "full": dict(method="full"),
    "full-eager-gc": dict(method="full", attn_implementation="eager", gradient_checkpointing=True),
    "full-fp32-cpu": dict(method="full", dtype="fp32", device="cpu"),
    "full-8bit-zero3": dict(method="full", optimizer="adamw_8bit", sharding="zero3", num_gpus=8),
    "lora-paged-ddp": dict(method="lora", optimizer="paged_adamw", sharding="ddp", num_gpus=2, lora=ALL_LINEAR),
    "inference": dict(method="inference"),
    "inference-eager-nf4": dict(method="inference", attn_implementation="eager", quant=QuantSpec("nf4", True, 64)),
}
MODELS = {**{m: m for m in ("llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2.5-0.5b", "gpt2", "gemma-7b",
                            "phi-3-mini", "falcon-7b", "mixtral-8x7b", "pythia-1b") if m in models()},
          **{f"tiny-{k}": v for k, v in TINY_CONFIGS.items()}}


def _estimable(model, setting: dict) -> EstimateRequest | None:
    """The request, with eager attention where the family has no sdpa; None where the
    architecture does not take the setting (e.g. DoRA on fused experts)."""
    req = EstimateRequest(model=model, **setting)
    if not resolve_model(model).supports_sdpa and req.attn_implementation == "sdpa":
        req = replace(req, attn_implementation="eager")
    try:
        estimate(req)
    except EstimateError:
        return None
    return req


CASES = {f"{m}-{s}": req for m, model in MODELS.items() for s, setting in SETTINGS.items()
         if (req := _estimable(model, setting)) is not None}


def test_the_table_covers_most_pairs():
    assert len(CASES) >= 0.9 * len(MODELS) * len(SETTINGS)


@pytest.mark.parametrize("request_", CASES.values(), ids=CASES.keys())
def test_fit_equals_the_formulas(request_):
    req, arch = normalize(request_)
    plan = step_plan(arch, _shape_free(req))
    polynomial = fit(plan.moments_at)
    if polynomial is None and not estimate_module.fits(plan, 1):
        return  # Falcon's kept masks, rows padded to a multiple of 16: estimated from the formulas directly
    assert polynomial is not None, "every moment should be an integer polynomial in b and s"
    for b, s in POINTS:
        if arch.smallest_window and s >= arch.smallest_window:
            continue  # another polynomial: estimates past the window never use this one
        direct = [(m.name, m.terms) for m in plan.moments_at(b, s)]
        fitted = polynomial.evaluate(b, s)
        assert fitted == direct, (b, s)
        assert [list(t) for _, t in fitted] == [list(t) for _, t in direct], "terms keep their order"
        assert polynomial.totals_at(b, s) == [sum(t.values()) for _, t in direct]


@pytest.fixture
def fresh_plans():
    """No plan seen yet: the next estimate of each setting comes from the formulas."""
    estimate_module._USED_ONCE.clear()
    step_plan.cache_clear()
    estimate_module._polynomial.cache_clear()


@pytest.mark.parametrize("request_", CASES.values(), ids=CASES.keys())
def test_estimate_is_the_same_from_the_formulas_and_from_the_fit(request_, fresh_plans):
    """The first estimate of a setting comes from the formulas, the next ones from the fit."""
    req, arch = normalize(request_)
    plan = step_plan(arch, _shape_free(req))
    # below the sliding window, where one polynomial holds (past it estimates never fit)
    shapes = [(b, min(s, arch.smallest_window - 1) if arch.smallest_window else s)
              for b, s in [(3, 777), (1, 4096), (5, 64)]]

    def documents():
        return [to_document(estimate(replace(request_, batch_size=b, seq_len=s))) for b, s in shapes]

    fitting = estimate_module.fits(plan, 1)  # not Falcon's padded masks: formulas only there
    assert plan not in estimate_module._USED_ONCE
    direct = to_document(estimate(replace(request_, batch_size=shapes[0][0], seq_len=shapes[0][1])))
    assert (plan in estimate_module._USED_ONCE) == fitting
    fitted = documents()
    if fitting:
        assert estimate_module._polynomial(plan) is not None, "the second estimate fits the plan"
    assert fitted[0] == direct
    assert json.dumps(fitted[0]) == json.dumps(direct), "same keys in the same order"
    assert documents() == fitted


@pytest.mark.parametrize("model", ["mistral-7b", "phi-3-mini-4k"])
def test_past_the_sliding_window_estimates_come_from_the_formulas(model, fresh_plans):
    """Once the sequence reaches the window, transformers gives sdpa a real mask (kept per layer) and
    repeats k and v: the estimate jumps, and a fit made below the window must not hide that."""
    req, arch = normalize(EstimateRequest(model, method="lora", seq_len=64, lora=ALL_LINEAR))
    window = arch.sliding_window
    assert window > 0
    below, at = (replace(req, seq_len=window - 1), replace(req, seq_len=window))
    for _ in range(3):  # first from the formulas, then (below the window) from the fit
        assert estimate(at).peak_allocated_bytes - estimate(below).peak_allocated_bytes > (
            req.batch_size * window * window * 2)  # at least the bf16 mask of one layer
    plan = step_plan(arch, _shape_free(req))
    assert estimate_module._polynomial(plan) is not None
    direct = plan.moments_at(1, window)
    assert [m.allocated_bytes for m in direct] == list(estimate(at).moment_bytes)


@dataclass(frozen=True)
class _Moment:
    name: str
    terms: dict


@pytest.mark.parametrize("formula", [
    lambda b, s: b * s * s * s,  # cubic in s
    lambda b, s: b * b * s,  # quadratic in b
    lambda b, s: (b * s) // 3,  # rounded: not a polynomial
    lambda b, s: b * s / 2,  # not an integer
    lambda b, s: 5 if s < 4 else 6,  # piecewise: equal on the probes, not beyond
], ids=["s-cubed", "b-squared", "floor", "half", "piecewise"])
def test_fit_refuses_what_is_not_its_polynomial(formula):
    assert fit(lambda b, s: (_Moment("forward", {"activations_bytes": formula(b, s)}),)) is None


def test_fit_refuses_moments_that_change_with_the_shape():
    def moments(b, s):
        extra = (_Moment("backward", {"working_bytes": 1}),) if b * s > 2 else ()
        return (_Moment("forward", {"activations_bytes": b * s}),) + extra

    assert fit(moments) is None


@pytest.mark.parametrize("c0, c1, c2", [(0, 0, 0), (5, 0, 0), (-3, 7, 2), (10**15, 3, 10**9)])
def test_quadratic_interpolates_exactly(c0, c1, c2):
    g = [c0 + c1 * s + c2 * s * s for s in (1, 2, 3)]
    assert _integer_quadratic(*g) == (c0, c1, c2)
