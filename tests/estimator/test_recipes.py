"""The recipe choices (issue 19): the libraries' defaults, the loop, gradient accumulation - each
a mechanism whose bytes the estimate adds where it says, no more."""

from contextlib import nullcontext
from dataclasses import replace

import pytest

from tunefit.estimator import EstimateError, EstimateRequest, LoraSpec, estimate, get_model
from tunefit.estimator.request import DEFAULT_REQUEST, default_attention, default_checkpointing
from tunefit.estimator.units import DTYPE_BITS, FP32_BITS

MODEL = "llama-3-8b"


def _est(**kw):
    return estimate(EstimateRequest(MODEL, batch_size=2, seq_len=1024, **kw))


@pytest.mark.parametrize("method,prepare_kbit,expected", [
    ("qlora", True, True),  # peft's prepare_model_for_kbit_training(use_gradient_checkpointing=True)
    ("qlora", False, False),
    ("lora", True, False),  # transformers' TrainingArguments(gradient_checkpointing=False)
    ("full", True, False),
    ("inference", True, False),
], ids=["qlora-prepared", "qlora-unprepared", "lora", "full", "inference"])
def test_checkpointing_defaults_to_the_libraries(method, prepare_kbit, expected):
    assert DEFAULT_REQUEST.gradient_checkpointing is None
    est = _est(method=method, prepare_kbit=prepare_kbit)
    assert est.request.gradient_checkpointing is expected is default_checkpointing(method, prepare_kbit)
    assert any(a.startswith(f"gradient checkpointing {'on' if expected else 'off'}") for a in est.assumptions) \
        or method == "inference"


def test_an_explicit_checkpointing_choice_is_kept():
    off = _est(method="qlora", gradient_checkpointing=False)
    on = _est(method="qlora")
    assert off.request.gradient_checkpointing is False
    assert off.peak_allocated_bytes > on.peak_allocated_bytes
    assert on.peak_allocated_bytes == _est(method="qlora", gradient_checkpointing=True).peak_allocated_bytes


@pytest.mark.parametrize("model,expected", [("gemma-2-9b", "eager"), ("gpt-oss-20b", "eager"),
                                            ("llama-3-8b", "sdpa"), ("qwen3-8b", "sdpa")])
def test_attention_defaults_to_what_transformers_picks(model, expected):
    est = estimate(EstimateRequest(model))
    assert est.request.attn_implementation == expected == default_attention(get_model(model).arch)
    with pytest.raises(EstimateError, match="attn_implementation") if expected == "eager" else nullcontext():
        estimate(EstimateRequest(model, attn_implementation="sdpa"))


@pytest.mark.parametrize("method,dtype", [("full", "bf16"), ("lora", "bf16"), ("qlora", "bf16"), ("full", "fp32")],
                         ids=["full-bf16", "lora-bf16", "qlora-bf16", "full-fp32"])
def test_a_plain_loop_holds_the_logits_and_the_loss_at_every_moment(method, dtype):
    trainer = _est(method=method, dtype=dtype, gradient_checkpointing=False)
    plain = _est(method=method, dtype=dtype, gradient_checkpointing=False, loop="plain")
    arch = trainer.arch
    # QLoRA prepared by peft: lm_head is fp32, so are its logits
    logit_bits = FP32_BITS if method == "qlora" else DTYPE_BITS[dtype]
    logits = 2 * 1024 * arch.vocab_size * logit_bits / 8
    assert plain.moment_bytes[0] == trainer.moment_bytes[0]  # load: nothing yet
    # the loss: held through backward by both loops, through the rest only by the plain one
    backward = [p.name == "backward" for p in _moments(trainer)]
    assert [p - t for p, t in zip(plain.moment_bytes[1:], trainer.moment_bytes[1:], strict=True)] == [
        logits if in_backward else logits + 4 for in_backward in backward[1:]]
    assert any("keeps the model's output" in a for a in plain.assumptions)


def _moments(est):
    from tunefit.estimator.estimate import _shape_free, step_plan

    return step_plan(est.arch, _shape_free(est.request)).moments_at(est.request.batch_size, est.request.seq_len)


def test_a_plain_loop_under_checkpointing_also_holds_the_embedding_leaf_and_its_grad():
    trainer = _est(method="lora", gradient_checkpointing=True)
    plain = _est(method="lora", gradient_checkpointing=True, loop="plain")
    arch, tokens = trainer.arch, 2 * 1024
    step = [p.allocated_bytes for p in plain.phases if p.name == "optimizer_step"][0]
    step_trainer = [p.allocated_bytes for p in trainer.phases if p.name == "optimizer_step"][0]
    leaf_and_grad = 2 * tokens * arch.hidden_size * 2
    assert step - step_trainer == tokens * arch.vocab_size * 2 + 4 + leaf_and_grad


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_accumulation_keeps_every_gradient_through_forward_and_backward(method):
    one = _est(method=method, gradient_checkpointing=True)
    two = _est(method=method, gradient_checkpointing=True, grad_accum=2)
    many = _est(method=method, gradient_checkpointing=True, grad_accum=64)
    grads = one.breakdown["gradients_bytes"] if one.peak_phase == "optimizer_step" else None
    forward_one = [p for p in one.phases if p.name == "forward"][0]
    forward_two = [p for p in two.phases if p.name == "forward"][0]
    assert forward_one.terms["gradients_bytes"] == 0
    step = [p for p in two.phases if p.name == "optimizer_step"][0]
    assert forward_two.terms["gradients_bytes"] == step.terms["gradients_bytes"] > 0
    assert forward_two.allocated_bytes - forward_one.allocated_bytes == step.terms["gradients_bytes"]
    # the peak of a cycle does not depend on its length past one
    assert two.peak_allocated_bytes == many.peak_allocated_bytes >= one.peak_allocated_bytes
    assert grads is None or grads == step.terms["gradients_bytes"]
    assert any(a.startswith("gradient accumulation over 64") for a in many.assumptions)


def test_full_accumulation_counts_lm_heads_new_gradient_before_it_is_added():
    """lm_head's backward makes its V x h gradient before AccumulateGrad adds it into .grad: with
    few tokens, that moment is the backward's peak."""
    est = estimate(EstimateRequest(MODEL, method="full", batch_size=1, seq_len=16, grad_accum=2))
    backward = [p for p in est.phases if p.name == "backward"][0]
    head = est.arch.vocab_size * est.arch.hidden_size * 2
    step = [p for p in est.phases if p.name == "optimizer_step"][0]
    assert backward.terms["gradients_bytes"] == step.terms["gradients_bytes"] + head


@pytest.mark.parametrize("field,value", [("grad_accum", 0), ("grad_accum", 1.5), ("loop", "manual"),
                                         ("prepare_kbit", "yes"), ("gradient_checkpointing", 1)])
def test_bad_recipe_fields_are_refused_by_name(field, value):
    with pytest.raises(EstimateError, match=field):
        estimate(EstimateRequest(MODEL, **{field: value}))


@pytest.mark.parametrize("fields,message", [
    ({"method": "full", "dtype": "fp32", "autocast": "bf16"}, "with weights in fp32 is not modelled"),
    ({"method": "full", "dtype": "fp16", "autocast": "fp16"}, "GradScaler refuses fp16 gradients"),
    ({"method": "lora", "autocast": "bf16", "lora": {"variant": "dora"}}, "dora"),
    ({"model": "gpt2", "method": "lora", "autocast": "bf16", "lora": {"target_modules": ["c_attn"]}},
     "CUDA's autocast for gpt2"),
], ids=["fp32-master-weights", "fp16-full", "dora", "gpt2-cuda-layernorm"])
def test_autocast_settings_not_modelled_are_refused_with_the_reason(fields, message):
    from tunefit.estimator.request import request_from_fields

    with pytest.raises(EstimateError, match=message) as info:
        estimate(request_from_fields({"model": MODEL, **fields}))
    assert info.value.field == "autocast"


def test_the_same_gpt2_plan_under_cpu_autocast_is_estimated():
    est = estimate(EstimateRequest("gpt2", method="lora", autocast="bf16", device="cpu",
                                   lora=LoraSpec(target_modules=("c_attn",))))
    assert est.request.autocast == "bf16" and any(a.startswith("torch.autocast(bf16)") for a in est.assumptions)


def test_autocast_makes_qlora_logits_16_bit_and_keeps_a_16_bit_copy_of_lm_head():
    """Under peft's kbit preparation lm_head is fp32: autocast computes it with a bf16 copy of its
    weight (kept for the input gradient) and emits bf16 logits, which the loss upcasts."""
    plain = _est(method="qlora", gradient_checkpointing=True)
    mixed = _est(method="qlora", gradient_checkpointing=True, autocast="bf16")
    arch, tokens = plain.arch, 2 * 1024
    start_plain, start_mixed = (next(p for p in _moments(e) if p.name == "backward") for e in (plain, mixed))
    copy = arch.vocab_size * arch.hidden_size * 2
    assert start_mixed.terms["activations_bytes"] - start_plain.terms["activations_bytes"] == copy
    forward_plain, forward_mixed = (next(p for p in _moments(e) if p.name == "forward") for e in (plain, mixed))
    # under checkpointing the autocast cache holds the adapters' bf16 copies until the forward ends
    assert forward_mixed.terms["activations_bytes"] - forward_plain.terms["activations_bytes"] == copy + _cache(mixed)
    assert _cache(mixed) == 2 * mixed.adapter_params  # every adapter weight, 2 bytes each
    # fp32 logits + log-probs (no upcast copy) against bf16 logits + their fp32 upcast + log-probs
    assert forward_plain.terms["logits_bytes"] == tokens * arch.vocab_size * 8
    assert forward_mixed.terms["logits_bytes"] == tokens * arch.vocab_size * 10


def _cache(est):
    from tunefit.estimator import activations as act
    from tunefit.estimator.estimate import _shape_free, step_plan

    plan = step_plan(est.arch, _shape_free(est.request))
    return act.autocast_cache_held(est.arch, replace(plan.setting, batch=2, seq=1024))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_autocast_in_the_weights_dtype_changes_little_but_the_adapters(method):
    """bf16 weights under bf16 autocast: nn.Linear computes as it did; only peft's fp32 adapters
    change (a bf16 cast of their input instead of an fp32 one, bf16 copies of A and B)."""
    plain = _est(method=method)
    mixed = _est(method=method, autocast="bf16")
    if method == "full":
        assert mixed.moment_bytes == plain.moment_bytes
    else:
        assert mixed.peak_allocated_bytes < plain.peak_allocated_bytes


# ---- framework presets -------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", ["hf-trainer", "trl-sft", "trl-dpo", "qlora-paper", "unsloth"])
def test_a_recipe_fills_only_what_the_request_leaves_out(recipe):
    from tunefit.estimator.recipes import RECIPES
    from tunefit.estimator.request import request_from_fields

    preset = RECIPES[recipe].fields
    est = estimate(request_from_fields({"model": MODEL, "recipe": recipe, "method": "qlora"}))
    req = est.request
    for key in ("optimizer", "autocast", "loop", "prepare_kbit", "gradient_checkpointing", "grad_accum", "loss",
                "objective"):
        if key in preset:
            assert getattr(req, key) == preset[key], key
    assert req.recipe == recipe and est.assumptions[0].startswith(f"recipe {recipe}: ")
    overridden = estimate(request_from_fields({"model": MODEL, "recipe": recipe, "method": "qlora",
                                               "optimizer": "sgd", "autocast": "none"}))
    assert (overridden.request.optimizer, overridden.request.autocast) == ("sgd", "none")


def test_the_qlora_paper_recipe_is_the_papers_setup():
    from tunefit.estimator.request import request_from_fields

    req = estimate(request_from_fields({"model": MODEL, "recipe": "qlora-paper"})).request
    assert (req.method, req.quant.type, req.quant.double_quant, req.optimizer, req.autocast) == (
        "qlora", "nf4", True, "paged_adamw", "bf16")
    assert (req.lora.r, req.lora.alpha, req.lora.target_modules, req.lora.dropout) == (64, 16.0, "all-linear", 0.1)
    assert req.gradient_checkpointing is True
    # a method that trains an unquantized base takes none of the preset's quantization
    lora = estimate(request_from_fields({"model": MODEL, "recipe": "qlora-paper", "method": "lora"})).request
    assert lora.method == "lora" and not lora.quant.enabled and lora.lora.r == 64


def test_an_unknown_recipe_is_refused_by_name():
    from tunefit.estimator.request import request_from_fields

    with pytest.raises(EstimateError, match="recipe"):
        request_from_fields({"model": MODEL, "recipe": "torchtune"})
    with pytest.raises(EstimateError, match="recipe"):
        estimate(EstimateRequest(MODEL, recipe="nope"))


def test_the_headline_question_names_its_recipe():
    """Llama-3-8B QLoRA r=16 on every linear layer, batch 4 x 2048, on a 24 GB card: each recipe's
    answer is the estimate of the fields it stands for, and says which recipe it assumed."""
    from tunefit.estimator.recipes import RECIPES
    from tunefit.estimator.request import request_from_fields

    question = {"model": MODEL, "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
                "batch_size": 4, "seq_len": 2048, "gpu": "rtx-4090"}
    for name, recipe in RECIPES.items():
        est = estimate(request_from_fields({**question, "recipe": name}))
        fields = {**recipe.fields, **question, "lora": {**recipe.fields.get("lora", {}), **question["lora"]}}
        assert est.peak_bytes == estimate(request_from_fields(fields)).peak_bytes
        assert name in est.assumptions[0]
    # the defaults now follow peft: checkpointing on, so QLoRA sits below full fine-tuning again
    default = estimate(request_from_fields(question))
    full = estimate(request_from_fields({**question, "method": "full", "lora": None}))
    assert default.peak_bytes < full.peak_bytes


# ---- the chunked loss: TRL's fused LM head (estimator/chunked_loss.py) ----------------------------

def _chunked(**kw):
    fields = dict(method="lora", batch_size=2, seq_len=1024)
    return estimate(EstimateRequest(MODEL, **{**fields, **kw}))


def test_the_chunked_loss_never_holds_the_logits():
    """Standard: the fp32 log-softmax of ``t x V`` logits, three of them at the loss's backward;
    chunked: no term of any moment grows with ``t·V``: doubling the vocabulary moves the peak by
    the weights and a fixed number of ``32768``-column tiles only."""
    arch = get_model(MODEL).arch
    standard, chunked = _chunked(), _chunked(loss="chunked")
    assert chunked.peak_bytes < standard.peak_bytes
    tokens = 2 * 1024
    assert standard.breakdown["logits_bytes"] >= 3 * tokens * arch.vocab_size * 4
    wider = replace(arch, vocab_size=2 * arch.vocab_size)
    at = {name: estimate(EstimateRequest(wider if name == "wide" else arch, method="lora", batch_size=2,
                                         seq_len=1024, loss="chunked")) for name in ("narrow", "wide")}
    logits = [max(p.terms["logits_bytes"] for p in at[name].phases) for name in ("narrow", "wide")]
    assert logits[1] == logits[0]  # on CUDA (Triton) the tiles are 4096 x 32768 whatever V is


def test_the_chunked_buffer_stops_growing_at_4096_tokens():
    """mm_buf is ``min(N, 4096) x 32768`` in the compute dtype, N = b·(s-1) scored positions: past
    4,096 tokens only the per-token terms grow."""
    from tunefit.estimator import chunked_loss

    def fold(seq):
        est = _chunked(loss="chunked", batch_size=1, seq_len=seq)
        return max(p.terms["logits_bytes"] for p in est.phases)

    e = get_model(MODEL).arch.embedding_dim
    below = fold(4001) - fold(4000)  # 1 more scored position: a buffer row of 32768 bf16 besides
    above = fold(5001) - fold(5000)
    assert below - above == chunked_loss.CHUNK_SIZE * 2
    assert above > e * 2  # the copied hidden row and the fp32 gradient rows still grow


def test_a_cpu_folds_with_fp32_tiles_where_cuda_uses_triton():
    """The same backward fold: on CUDA Triton turns the tile into its gradient in place; a CPU's
    torch ops keep seven fp32 tiles and a bool one (``_backward_tile``'s locals and temporaries)."""
    from tunefit.estimator import chunked_loss
    from tunefit.estimator.estimate import activation_setting
    from tunefit.estimator.request import normalize

    folds = {}
    for device in ("cpu", "cuda"):
        req, arch = normalize(EstimateRequest(MODEL, method="lora", batch_size=2, seq_len=1024, device=device,
                                              loss="chunked"))
        folds[device] = chunked_loss.backward_fold_working(arch, activation_setting(req, arch))
    tile = 2 * 1023 * 32768  # N = b·(s-1) rows x the widest tile (V = 128256 > 32768)
    assert folds["cpu"] - folds["cuda"] == tile * (7 * 4 + 1)


def test_the_chunked_loss_is_refused_where_there_is_no_loss():
    with pytest.raises(EstimateError, match="loss"):
        _chunked(method="inference", loss="chunked")
    with pytest.raises(EstimateError, match="loss"):
        _chunked(loss="fused")


def test_the_chunked_loss_says_what_it_runs():
    est = _chunked(loss="chunked")
    assert est.request.loss == "chunked"
    assert any("TRL 1.16's fused LM head" in a and "Triton" in a for a in est.assumptions)
    assert any("--loss chunked" in a for a in _chunked().assumptions)


def test_the_trl_sft_recipe_answers_the_headline_question():
    """What a TRL SFTTrainer user sees: checkpointing, bf16 autocast and the fused head make
    Llama-3-8B QLoRA r=16 all-linear 4 x 2048 fit a 24 GB card that the standard loss overflows."""
    from tunefit.estimator.document import to_document
    from tunefit.estimator.request import request_from_fields

    question = {"model": MODEL, "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
                "batch_size": 4, "seq_len": 2048, "gpu": "rtx-4090"}
    trl = to_document(estimate(request_from_fields({**question, "recipe": "trl-sft"})))
    paper = to_document(estimate(request_from_fields({**question, "recipe": "qlora-paper"})))
    assert trl["request"]["loss"] == "chunked" and trl["fits"][0]["fits"] is True
    assert paper["fits"][0]["fits"] is False


# ---- the default recipe, and what a recipe cannot apply ------------------------------------------

EXCEPTIONS = {
    # a LayerNorm family on CUDA: CUDA's autocast runs layer_norm in fp32, not modelled yet
    "layernorm-family-on-cuda": ({"model": "gpt2", "method": "lora", "lora": {"target_modules": ["c_attn"]}},
                                 {"autocast": "LayerNorm"}),
    # the same family on a CPU, whose autocast leaves layer_norm alone: nothing excepted
    "layernorm-family-on-cpu": ({"model": "gpt2", "method": "lora", "lora": {"target_modules": ["c_attn"]},
                                 "device": "cpu"}, {}),
    "dora": ({"model": MODEL, "method": "qlora", "lora": {"variant": "dora"}},
             {"autocast": "dora", "adapter_dtype": "DoRA"}),
    "fp32-weights": ({"model": MODEL, "method": "full", "dtype": "fp32"}, {"autocast": "weights in fp32"}),
    "llama4": ({"model": "llama-4-scout", "method": "lora"}, {"autocast": "llama4", "loss": "Llama4ForCausalLM"}),
    "nothing-to-except": ({"model": MODEL, "method": "qlora"}, {}),
}


@pytest.mark.parametrize("fields,excepted", EXCEPTIONS.values(), ids=EXCEPTIONS.keys())
def test_a_recipe_field_the_model_cannot_take_keeps_its_default_and_says_why(fields, excepted):
    from tunefit.estimator.document import request_from_document, to_document
    from tunefit.estimator.recipes import DEFAULT_RECIPE, RECIPES
    from tunefit.estimator.request import request_from_fields

    est = estimate(request_from_fields({**fields, "recipe": DEFAULT_RECIPE}))
    reasons = dict(est.request.recipe_exceptions)
    assert set(reasons) == set(excepted)
    for name, phrase in excepted.items():
        assert phrase in reasons[name]
        library = estimate(request_from_fields(fields)).request
        assert getattr(est.request, name) == getattr(library, name)
        assert any(a.startswith(f"recipe {DEFAULT_RECIPE}'s {name} is not applied") for a in est.assumptions)
    for name in set(RECIPES[DEFAULT_RECIPE].fields) - set(excepted) - {"adapter_dtype"}:
        assert getattr(est.request, name) == RECIPES[DEFAULT_RECIPE].fields[name], name  # the rest applied
    doc = to_document(est)
    assert doc["request"]["recipe_exceptions"] == reasons
    assert to_document(estimate(request_from_document(doc["request"])))["request"] == doc["request"]  # read back


@pytest.mark.parametrize("fields", [
    {"model": "gpt2", "method": "lora", "lora": {"target_modules": ["c_attn"]}, "autocast": "bf16"},
    {"model": "llama-4-scout", "method": "lora", "loss": "chunked"},
    {"model": "llama-4-scout", "method": "lora", "objective": "dpo"},  # DPO has no other loss to fall back to
], ids=["given-autocast", "given-loss", "dpo-without-its-loss"])
def test_a_field_the_user_gives_is_refused_not_excepted(fields):
    from tunefit.estimator.recipes import DEFAULT_RECIPE
    from tunefit.estimator.request import request_from_fields

    with pytest.raises(EstimateError, match="autocast|loss"):
        estimate(request_from_fields({**fields, "recipe": DEFAULT_RECIPE}))


def test_a_recipe_sets_up_training_only():
    """Inference takes none of a training recipe: the request names none."""
    from tunefit.estimator.recipes import DEFAULT_RECIPE
    from tunefit.estimator.request import request_from_fields

    req = estimate(request_from_fields({"model": MODEL, "method": "inference", "recipe": DEFAULT_RECIPE})).request
    assert req.recipe is None and req == estimate(EstimateRequest(MODEL, method="inference")).request


def test_the_default_recipe_answers_the_headline_question():
    """The surfaces' default (``DEFAULT_RECIPE``) is one a TRL user runs: the headline plan fits
    the 24 GB card with its figure, and says which recipe it assumed."""
    from tunefit.estimator.recipes import DEFAULT_RECIPE, NO_RECIPE
    from tunefit.estimator.request import request_from_fields

    assert DEFAULT_RECIPE in ("trl-sft", "qlora-paper")
    question = {"model": MODEL, "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
                "batch_size": 4, "seq_len": 2048, "gpu": "rtx-4090"}
    est = estimate(request_from_fields({**question, "recipe": DEFAULT_RECIPE}))
    assert est.assumptions[0].startswith(f"recipe {DEFAULT_RECIPE}: ")
    assert est.request.recipe_exceptions == ()
    libraries = estimate(request_from_fields({**question, "recipe": NO_RECIPE}))
    assert libraries.request.recipe is None  # "none" names no recipe
    assert est.peak_bytes < libraries.peak_bytes


# ---- DPO as TRL's DPOTrainer runs it ---------------------------------------------------------------

def test_dpo_defaults_to_trls_fused_head_and_refuses_what_it_does_not_model():
    est = _chunked(objective="dpo")
    assert (est.request.loss, est.request.objective) == ("chunked", "dpo")
    assert _chunked().request.loss == "standard"
    refused = [({"objective": "dpo", "loss": "standard"}, "loss"), ({"objective": "dpo", "loop": "plain"}, "loop"),
               ({"objective": "dpo", "method": "inference"}, "objective"), ({"objective": "ppo"}, "objective")]
    for fields, name in refused:
        with pytest.raises(EstimateError, match=name):
            _chunked(**fields)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_dpo_runs_twice_the_sequences_after_the_policy_forward_scores_the_reference(method):
    """The chosen and rejected sequences make one batch of 2b: every activation of SFT at 2b, and a
    reference forward under no_grad while the policy's graph is alive; full fine-tuning holds the
    frozen reference copy of the weights besides."""
    dpo = _chunked(method=method, objective="dpo", batch_size=2)
    sft = _chunked(method=method, loss="chunked", batch_size=4)
    weights = {p.name: p.terms["weights_bytes"] for p in dpo.phases}
    assert weights["load"] == (2 if method == "full" else 1) * sft.phases[0].terms["weights_bytes"]
    dpo_backward = max(p.allocated_bytes for p in dpo.phases if p.name == "backward")
    sft_backward = max(p.allocated_bytes for p in sft.phases if p.name == "backward")
    copy = weights["load"] - sft.phases[0].terms["weights_bytes"]
    # the per-token outputs DPO asks for beyond SFT's (mean_logits) are all that differs besides
    assert 0 <= dpo_backward - copy - sft_backward <= 4 * 2047 * 4


def test_the_reference_forward_is_a_moment_of_its_own():
    from tunefit.estimator import activations as act
    from tunefit.estimator.estimate import activation_setting
    from tunefit.estimator.request import normalize

    req, arch = normalize(EstimateRequest(MODEL, method="lora", objective="dpo", batch_size=1, seq_len=8192,
                                          gradient_checkpointing=True, attn_implementation="eager"))
    st = activation_setting(req, arch)
    mlp, attention, head = act.reference_forward_working(arch, replace(st, batch=2, seq=8192))
    assert attention > mlp  # eager scores at 8k tokens: b·n·s² in the no-grad reference forward
    est = estimate(req)
    forward = next(p for p in est.phases if p.name == "forward")
    assert forward.terms["working_bytes"] >= attention


# ---- TRL's bf16 adapters for a quantized model ----------------------------------------------------

def test_bf16_adapters_halve_the_adapters_their_gradients_and_adam_state():
    fp32 = _chunked(method="qlora")
    bf16 = _chunked(method="qlora", adapter_dtype="bf16")
    assert (fp32.request.adapter_dtype, bf16.request.adapter_dtype) == ("fp32", "bf16")
    step = {e: next(p for p in est.phases if p.name == "optimizer_step") for e, est in (("fp32", fp32), ("bf16", bf16))}
    for term in ("adapter_bytes", "gradients_bytes", "optimizer_bytes"):
        assert step["bf16"].terms[term] * 2 == step["fp32"].terms[term], term


def test_bf16_adapters_under_bf16_autocast_need_no_cast_copies():
    """Autocast caches a 16-bit copy of an fp32 adapter weight; a bf16 one it uses as it is."""
    from tunefit.estimator import activations as act
    from tunefit.estimator.estimate import activation_setting
    from tunefit.estimator.request import normalize

    copies = {}
    for dtype in ("fp32", "bf16"):
        req, arch = normalize(EstimateRequest(MODEL, method="qlora", autocast="bf16", adapter_dtype=dtype))
        top, top_st = act.layer_at(arch, activation_setting(req, arch), -1)
        copies[dtype] = act.autocast_weight_copies(top, top_st)
    assert copies["fp32"] > 0 and copies["bf16"] == 0


@pytest.mark.parametrize("fields", [{"method": "full"}, {"method": "qlora", "lora": LoraSpec(variant="dora")},
                                    {"method": "qlora", "autocast": "fp16", "dtype": "fp16"}],
                         ids=["full", "dora", "fp16-autocast"])
def test_bf16_adapters_are_refused_where_not_modelled(fields):
    with pytest.raises(EstimateError, match="adapter_dtype"):
        estimate(EstimateRequest(MODEL, adapter_dtype="bf16", **fields))


def test_trl_recipes_cast_only_a_quantized_models_adapters():
    from tunefit.estimator.request import request_from_fields

    for recipe in ("trl-sft", "trl-dpo"):
        qlora = estimate(request_from_fields({"model": MODEL, "recipe": recipe, "method": "qlora"})).request
        lora = estimate(request_from_fields({"model": MODEL, "recipe": recipe, "method": "lora"})).request
        assert (qlora.adapter_dtype, lora.adapter_dtype, qlora.prepare_kbit) == ("bf16", "fp32", False)


# ---- inference: generate()'s prefill or an evaluation forward ------------------------------------

def test_an_evaluation_forward_holds_every_positions_logits_and_their_fp32_loss():
    """generate()'s prefill keeps the last position's logits; a perplexity evaluation's forward all
    of them, their fp32 copy and the log-softmax (``t·V·(2 + 4 + 4)`` for bf16 logits)."""
    arch = get_model(MODEL).arch
    prefill = _chunked(method="inference", batch_size=2, seq_len=1024)
    forward = _chunked(method="inference", inference_mode="forward", batch_size=2, seq_len=1024)
    assert [p.name for p in prefill.phases] == ["load", "prefill"]
    assert [p.name for p in forward.phases] == ["load", "forward"]
    logits = forward.phases[1].terms["logits_bytes"]
    tokens = 2 * 1024
    assert logits == tokens * arch.vocab_size * (2 + 4 + 4) + (2 * tokens + 2) * 8 + 2 * 4
    assert forward.phases[1].terms["kv_cache_bytes"] == prefill.phases[1].terms["kv_cache_bytes"]
    assert any("perplexity" in a for a in forward.assumptions)
    with pytest.raises(EstimateError, match="inference_mode"):
        _chunked(inference_mode="forward")


@pytest.mark.parametrize("new_tokens", [1, 2, 500])
def test_generate_decodes_with_the_cache_grown_to_the_last_forward(new_tokens):
    """The last decoding forward runs with ``s + N - 1`` positions cached (the N-th token is never
    fed back); one new token is the prefill's own, with one fp32 copy of the next-token logits."""
    arch = get_model(MODEL).arch
    prefill = _chunked(method="inference", batch_size=2, seq_len=1024)
    est = _chunked(method="inference", batch_size=2, seq_len=1024, new_tokens=new_tokens)
    names = [p.name for p in est.phases]
    assert names == (["load", "prefill"] if new_tokens == 1 else ["load", "prefill", "decode"])
    kv_per_position = prefill.phases[1].terms["kv_cache_bytes"] / 1024
    last = est.phases[-1]
    assert last.terms["kv_cache_bytes"] == kv_per_position * (1024 + new_tokens - 1)
    assert est.peak_allocated_bytes >= prefill.peak_allocated_bytes
    from tunefit.estimator import activations as act
    from tunefit.estimator.estimate import activation_setting
    from tunefit.estimator.request import normalize

    req, _ = normalize(est.request)
    moments = act.decode_moments(arch, activation_setting(req, arch), 16, new_tokens)
    fp32_copies = 1 if new_tokens == 1 else 2  # the next-token logits, and the previous step's
    assert moments[-1][1]["logits_bytes"] == 2 * arch.vocab_size * (2 + 4 * fp32_copies)
    assert any("generate()" in a and str(new_tokens) in a for a in est.assumptions)


@pytest.mark.parametrize("model,fields,reason", [
    (MODEL, {"method": "lora"}, "inference"),
    (MODEL, {"inference_mode": "forward"}, "generate"),
    ("deepseek-v3", {}, "latent"),
    ("gemma-2-9b", {"seq_len": 4000, "new_tokens": 200}, "window"),
    ("falcon-7b", {}, "masks"),
], ids=["training", "evaluation-forward", "mla", "past-the-window", "falcon"])
def test_decoding_is_refused_where_not_modelled(model, fields, reason):
    request = {"method": "inference", "new_tokens": 16, **fields}
    with pytest.raises(EstimateError, match=reason):
        estimate(EstimateRequest(model, **request))


@pytest.mark.parametrize("value", [-1, 1.5, True, "8"])
def test_new_tokens_must_be_a_count(value):
    with pytest.raises(EstimateError, match="new_tokens"):
        _chunked(method="inference", new_tokens=value)
