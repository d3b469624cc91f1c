"""Properties of the estimator over settings drawn by hypothesis: monotone in batch, sequence and
rank; QLoRA <= LoRA <= full where the mechanism says so; integer byte counts >= 0; and no error
other than ``EstimateError`` for anything the API's schema accepts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, QuantSpec, estimate, get_model, to_document
from tunefit.estimator.adapters import VARIANTS
from tunefit.estimator.arch import arch_from_config
from tunefit.estimator.quant import BLOCKSIZES, QUANT_TYPES
from tunefit.estimator.request import ATTN_IMPLEMENTATIONS, DEVICES, MAX_BATCH, MAX_RANK, MAX_SEQ, OPTIMIZERS
from tunefit.estimator.units import FP32_BYTES

EXAMPLES = 150
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CATALOG = ["llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2.5-7b", "gemma-2-9b", "phi-3-mini", "gpt2",
           "llama-2-70b", "mixtral-8x7b", "falcon-7b", "pythia-1b", "opt-1.3b", "gemma-2b"]
# Terms that hold the model's state between steps (weights, adapters, gradients, optimizer
# states): what the methods trade against each other, the papers' comparison (arXiv:2305.14314 §2).
STATE_TERMS = ("weights_bytes", "quantized_weights_bytes", "quant_constants_bytes", "adapter_bytes", "gradients_bytes",
               "optimizer_bytes")


def _catalog_ids() -> list[str]:
    known = []
    for model_id in CATALOG:
        try:
            get_model(model_id)
        except EstimateError:
            continue
        known.append(model_id)
    return known


MODEL_IDS = _catalog_ids()


def _quantizable(model_id: str) -> bool:
    """Whether bitsandbytes replaces the model's layers. Not when transformers 5 fuses MoE experts
    into 3-D parameters (Mixtral: not nn.Linear), nor for Falcon's ``FalconLinear`` (an nn.Linear
    subclass, and bitsandbytes replaces exact nn.Linear only): those stay unquantized, and
    ``prepare_model_for_kbit_training`` casts them to fp32, so such a model's QLoRA keeps more
    than its LoRA, as the estimate's assumptions say."""
    arch = get_model(model_id).arch
    return arch.num_local_experts == 0 and all(m.quantizable for m in arch.layer_linears)


DENSE_IDS = [m for m in MODEL_IDS if _quantizable(m)]
models = st.sampled_from(MODEL_IDS + [f"tiny:{name}" for name in TINY_CONFIGS])


def _model(name: str):
    return {"config": TINY_CONFIGS[name.removeprefix("tiny:")]} if name.startswith("tiny:") else name


def _linear_names(name: str) -> tuple[str, ...]:
    if name.startswith("tiny:"):
        return arch_from_config(TINY_CONFIGS[name.removeprefix("tiny:")]).linear_names
    return get_model(name).arch.linear_names


@st.composite
def requests(draw, methods=("full", "lora", "qlora", "inference"), names=None, full_range=False):
    """A setting the API's schema accepts (names from its choices; sizes within its bounds: the
    whole range with ``full_range``, else the usual one, batch <= 64, sequence <= 8192, r <= 256)."""
    batch, seq, rank = (MAX_BATCH, MAX_SEQ, MAX_RANK) if full_range else (64, 8192, 256)
    name = draw(models if names is None else names)
    method = draw(st.sampled_from(methods))
    linear = _linear_names(name)
    targets = draw(st.one_of(st.just("all-linear"), st.lists(st.sampled_from(linear), min_size=1, max_size=4,
                                                            unique=True).map(tuple)))
    lora = LoraSpec(r=draw(st.integers(1, rank)), alpha=draw(st.floats(0.5, 512)), target_modules=targets,
                    variant=draw(st.sampled_from(VARIANTS)), dropout=draw(st.sampled_from([0.0, 0.05, 0.1])))
    quant = None
    if method == "qlora" or (method == "inference" and draw(st.booleans())):
        quant = QuantSpec(type=draw(st.sampled_from(QUANT_TYPES)), double_quant=draw(st.booleans()),
                          blocksize=draw(st.sampled_from(BLOCKSIZES)))
    return EstimateRequest(
        _model(name), method=method, dtype=draw(st.sampled_from(["fp32", "fp16", "bf16"])), lora=lora, quant=quant,
        batch_size=draw(st.integers(1, batch)), seq_len=draw(st.integers(1, seq)),
        gradient_checkpointing=draw(st.booleans()), optimizer=draw(st.sampled_from(OPTIMIZERS)),
        attn_implementation=draw(st.sampled_from(ATTN_IMPLEMENTATIONS)), device=draw(st.sampled_from(DEVICES)))


def _estimate_or_none(request: EstimateRequest):
    try:
        return estimate(request)
    except EstimateError:
        return None  # a documented refusal (e.g. sdpa for a model without it): not a property case


def _phase_bytes(est) -> dict[str, int]:
    return {p.name: p.allocated_bytes for p in est.phases}


# ---- monotone ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("knob,upper", [("batch_size", MAX_BATCH), ("seq_len", MAX_SEQ)], ids=["batch", "seq"])
@SETTINGS
@given(data=st.data())
def test_more_tokens_never_need_less_memory(knob, upper, data):
    request = data.draw(requests())
    more = min(upper, getattr(request, knob) + data.draw(st.integers(1, 4096)))
    small, large = _estimate_or_none(request), _estimate_or_none(replace(request, **{knob: more}))
    assume(small is not None and large is not None)
    assert small.peak_bytes <= large.peak_bytes
    assert all(small_phase <= _phase_bytes(large)[name] for name, small_phase in _phase_bytes(small).items())


@SETTINGS
@given(data=st.data())
def test_a_higher_rank_never_needs_less_memory(data):
    request = data.draw(requests(methods=("lora", "qlora")))
    r = min(MAX_RANK, request.lora.r + data.draw(st.integers(1, 256)))
    higher = replace(request, lora=replace(request.lora, r=r))
    low, high = _estimate_or_none(request), _estimate_or_none(higher)
    assume(low is not None and high is not None)
    assert low.peak_bytes <= high.peak_bytes
    assert low.trainable_params < high.trainable_params


# ---- QLoRA <= LoRA <= full ----------------------------------------------------------------------------

def _state_bytes(est) -> int:
    step = next(p for p in est.phases if p.name == "optimizer_step")
    return sum(step.terms[t] for t in STATE_TERMS)


def _adapters_are_small(est) -> bool:
    """Trained and frozen adapter tensors (VeRA's shared random projections are r·(d + k) fp32
    values however few scaling vectors train) at most an eighth of the model's parameters."""
    stored_params = est.breakdown["adapter_bytes"] / FP32_BYTES
    return 8 * max(est.adapter_params, stored_params) <= est.total_params


def _three_methods(request: EstimateRequest):
    full = replace(request, method="full", quant=None)
    lora = replace(request, method="lora", quant=None)
    qlora = replace(request, method="qlora", quant=request.quant or QuantSpec())
    return [_estimate_or_none(r) for r in (qlora, lora, full)]


@SETTINGS
@given(request=requests(methods=("lora",)))
def test_the_state_a_step_keeps_is_smaller_with_lora_than_full(request):
    """Weights, adapters, gradients and optimizer states: LoRA <= full for every model, when the
    adapters are adapters: at most an eighth of the model's parameters (LoRA's r(d+k) per matrix,
    arXiv:2106.09685 §4.1, against d·k). peft keeps adapters, their gradients and their optimizer
    states in fp32, so an adapter as large as the model it adapts (r near the hidden size) needs
    more than fully fine-tuning that model in 16 bits."""
    _, lora, full = _three_methods(request)
    assume(lora is not None and full is not None and _adapters_are_small(lora))
    assert _state_bytes(lora) <= _state_bytes(full)


@SETTINGS
@given(request=requests(methods=("lora",), names=st.sampled_from(DENSE_IDS)))
def test_the_state_a_step_keeps_orders_qlora_lora_full(request):
    """Weights, adapters, gradients and optimizer states (arXiv:2305.14314 §2: QLoRA ~ P/2 + adapters,
    LoRA ~ 2P + adapters, full ~ 16P bytes): QLoRA <= LoRA <= full for the catalog's models that
    bitsandbytes quantizes (see ``_quantizable``), whatever the tokens. Not for any config:
    QLoRA's ``prepare_model_for_kbit_training`` casts the parameters it does not quantize
    (embeddings, norms, head) to fp32, which outweighs the
    4-bit linear layers in a model as small as the tests' tiny ones (hidden size 64)."""
    estimates = _three_methods(request)
    assume(all(e is not None for e in estimates) and _adapters_are_small(estimates[1]))
    qlora, lora, full = (_state_bytes(e) for e in estimates)
    assert qlora <= lora <= full


@SETTINGS
@given(request=requests(methods=("lora",), names=st.sampled_from(DENSE_IDS)))
def test_the_peak_orders_qlora_lora_full_where_the_state_dominates(request):
    """The peak, for the catalog's quantizable models in fp32 with small adapters (as above), no
    adapter dropout, an optimizer that keeps its states on the device (AdamW, 32- or 8-bit) and a
    step's tokens (b·s) of at most 4096 per billion parameters.

    Outside that, the ordering of the peak is not a law, and the estimator follows what the
    libraries allocate: peft's ``prepare_model_for_kbit_training`` (which QLoRA runs) casts the
    unquantized parameters to fp32 and the activation stream follows, so a 16-bit QLoRA step keeps
    activations up to twice LoRA's; LoRA's adapter dropout keeps a copy of every adapted input that
    full fine-tuning does not; each adapted layer also keeps its t×r intermediate; and with SGD or a
    paged optimizer, full fine-tuning keeps no state on the device during the forward pass, where
    LoRA keeps its adapters and those intermediates on top of the same weights and activations.
    """
    # plain adapters: DoRA keeps every adapted layer's base and LoRA outputs for the magnitude's
    # gradient (t x out, twice), more than full fine-tuning keeps
    variant = "lora" if request.lora.variant == "dora" else request.lora.variant
    request = replace(request, dtype="fp32", lora=replace(request.lora, dropout=0.0, variant=variant),
                      optimizer="adamw_8bit" if "8bit" in request.optimizer else "adamw")
    estimates = _three_methods(request)
    assume(all(e is not None for e in estimates) and _adapters_are_small(estimates[1]))
    billions = estimates[2].total_params / 1e9
    assume(request.batch_size * request.seq_len <= 4096 * billions)
    qlora, lora, full = (e.peak_bytes for e in estimates)
    assert qlora <= lora <= full


# ---- counts -------------------------------------------------------------------------------------------

def _counts(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _counts(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _counts(item, f"{path}[{i}]")
    elif path.endswith(("_bytes", "_params")) or path.rsplit(".", 1)[-1] in ("total", "trainable"):
        if not path.endswith("headroom_bytes"):  # a signed difference: negative when it does not fit
            yield path, value


@SETTINGS
@given(request=requests())
def test_every_count_is_a_non_negative_integer(request):
    est = _estimate_or_none(request)
    assume(est is not None)
    counted = list(_counts(to_document(est)))
    assert counted
    for path, value in counted:
        assert type(value) is int and value >= 0, (path, value)
    assert all(type(v) is int and v >= 0 for v in (est.total_params, est.trainable_params, est.adapter_params))


# ---- only documented errors ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10)


@st.composite
def mutated_configs(draw):
    config = dict(TINY_CONFIGS[draw(st.sampled_from(sorted(TINY_CONFIGS)))])
    keys = sorted(config)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "drop", "add"]))
        if action == "drop" and config:
            config.pop(draw(st.sampled_from(sorted(config))), None)
        elif action == "set":
            config[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            config[draw(st.text(max_size=12))] = draw(json_values)
    return config


@SETTINGS
@given(config=mutated_configs(), request=requests(full_range=True))
def test_any_config_is_estimated_or_refused_with_the_documented_error(config, request):
    try:
        estimate(replace(request, model={"config": config}, lora=replace(request.lora, target_modules="all-linear")))
    except EstimateError:
        pass


@SETTINGS
@given(request=requests(full_range=True))
def test_any_setting_within_the_schema_is_estimated_or_refused_with_the_documented_error(request):
    est = _estimate_or_none(request)
    assert est is None or est.peak_bytes > 0
