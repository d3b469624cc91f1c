"""Breakdown terms on hand-worked cases (each number derived in the comment beside it)."""

from dataclasses import replace

import pytest

from tests.estimator.tiny_configs import OPT_350M, TINY_CONFIGS
from tunefit.estimator import EstimateRequest, LoraSpec, QuantSpec, arch_from_config, estimate, get_model
from tunefit.estimator import activations as act
from tunefit.estimator.memory import (
    adam8bit_state_bytes,
    adam_state_bytes,
    optimizer_bytes,
    quantized_linears,
    stepped_tensors,
    trainable_params,
    trainable_tensors,
    weight_bytes,
)
from tunefit.estimator.quant import constants_4bit_bytes, int8_bytes, packed_4bit_bytes
from tunefit.estimator.setting import ActivationSetting

N = 4096 * 4096  # one 4096x4096 matrix


@pytest.mark.parametrize("double_quant,expected", [
    (False, 262_144 * 4 + 64),  # 262,144 fp32 absmax (one per 64) + 16-entry fp32 NF4 code
    (True, 262_144 + 1_024 * 4 + 4 + 1_024 + 64),  # uint8 absmax + fp32 per 256 blocks + offset + map + code
], ids=["no-dq", "dq"])
def test_nf4_constants_of_one_matrix(double_quant, expected):
    assert constants_4bit_bytes(N, 64, double_quant) == expected


def test_nf4_packs_two_weights_per_byte():
    assert packed_4bit_bytes(N) == N // 2
    assert packed_4bit_bytes(3) == 2  # odd counts round up


def test_int8_weight_and_row_scales():
    q = int8_bytes(4096, 4096)
    assert (q.weight_bytes, q.constant_bytes) == (N, 4096 * 4)


def test_qlora_weights_llama_2_7b():
    arch = get_model("llama-2-7b").arch
    w = weight_bytes(arch, "qlora", "bf16", QuantSpec("nf4", True, 64), LoraSpec(r=8), True)
    quantized = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # 6,476,005,376 Linear weights
    assert w.quantized_bytes == quantized // 2
    # embeddings, lm_head and norms stay unquantized; prepare_model_for_kbit_training makes them fp32
    # + the rotary buffers inv_freq and original_inv_freq: 2 x 64 fp32 (head_dim 128 / 2)
    assert w.plain_bytes == (6_738_415_616 - quantized) * 4 + 2 * 64 * 4
    assert w.adapter_bytes == 4_194_304 * 4  # r=8 on q_proj, v_proj, fp32


def test_lora_weights_keep_base_in_dtype():
    arch = get_model("llama-2-7b").arch
    w = weight_bytes(arch, "lora", "bf16", QuantSpec("none", False, 64), LoraSpec(r=8), True)
    assert w.plain_bytes == 6_738_415_616 * 2 + 2 * 64 * 4  # bf16 weights + fp32 rotary buffers
    assert w.quantized_bytes == w.constant_bytes == 0


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS) + ["opt-350m"], ids=sorted(TINY_CONFIGS) + ["opt-350m"])
def test_full_fine_tuning_trains_the_listed_tensors(name):
    """Gradients and optimizer states of full fine-tuning cover every listed parameter tensor, one
    ``step`` scalar each; bitsandbytes quantizes the Linear weights among them."""
    arch = arch_from_config(OPT_350M if name == "opt-350m" else TINY_CONFIGS[name])
    tensors = trainable_tensors(arch, "full", None)
    assert trainable_params(tensors) == arch.total_params
    assert sum(count for _, count in tensors) == sum(t.count for t in arch.param_tensors())
    q_params, _ = quantized_linears(arch, QuantSpec())
    linears = [(m, arch.sparse_layers) for m in arch.layer_linears] + [(m, 1) for m in arch.model_linears]
    linears += list(arch.tower_linears)  # a multimodal wrapper's vision tower and projector
    if arch.dense_layer is not None:  # dense layers among sparse ones
        linears += [(m, len(arch.dense_layer_indices)) for m in arch.dense_layer.layer_linears]
    assert q_params == sum(m.weight_params * n for m, n in linears if m.quantizable)


@pytest.mark.parametrize("name", ["gemma3", "mistral3-untied"])
def test_text_batches_step_no_tower_parameter(name):
    """A multimodal wrapper trained on text: every parameter is trainable, but only the text model's
    get gradients and optimizer state (the tower's ``.grad`` stays None); the same for adapters."""
    arch = arch_from_config(TINY_CONFIGS[name])
    tower = sum(t.params for t in arch.param_tensors() if t.role == "tower")
    assert tower > 0
    assert trainable_params(stepped_tensors(arch, "full", None)) == arch.total_params - tower
    lora = LoraSpec(r=4, target_modules="all-linear")
    adapters = trainable_params(trainable_tensors(arch, "lora", lora))
    text_adapters = trainable_params(stepped_tensors(arch, "lora", lora))
    on_tower = sum(4 * (m.in_features + m.out_features) * n for m, n in arch.tower_linears)
    assert adapters - text_adapters == on_tower


def test_adam_state_counts_step_scalars_on_cpu_only():
    tensors = ((1000, 3), (10, 2))
    moments = 2 * (3000 + 20) * 4
    assert adam_state_bytes(tensors, 32, "cuda") == moments
    assert adam_state_bytes(tensors, 32, "cpu") == moments + 5 * 4


def test_adam8bit_keeps_small_tensors_in_32_bit():
    # 8192 elements: 2 x (8192 uint8 + 32 fp32 absmax); 100 elements (< 4096): 2 x 100 x 4
    assert adam8bit_state_bytes(((8192, 1), (100, 1)), 32) == 2 * (8192 + 32 * 4) + 2 * 100 * 4


def test_foreach_adam_step_temp_on_cuda_is_one_state_copy():
    tensors = ((1000, 3), (500, 1))
    assert optimizer_bytes(tensors, 16, "adamw", "cuda").step_temp_bytes == 3500 * 2
    assert optimizer_bytes(tensors, 16, "adamw", "cpu").step_temp_bytes == 2 * 1000 * 2


def _setting(**kw):
    base = dict(batch=2, seq=8, stream_bytes=2, logits_bytes=2, full=False, lora_targets=("q_proj", "v_proj"),
                lora_r=8, lora_dropout=0.0, attn="sdpa", device="cuda", gradient_checkpointing=False)
    base.update(kw)
    return ActivationSetting(**base)


def test_layer_saved_tiny_llama_lora_by_hand():
    arch = arch_from_config(TINY_CONFIGS["llama-gqa"])  # h=64, i=160, 4 heads, 2 kv heads, head_dim 16
    t = 16
    norms = 2 * (t * 64 * 4 + t * 4)  # fp32 input copies + rsqrt, two RMSNorms
    lora = 2 * (t * 8 * 4 + t * 64 * 4)  # q, v: lora_A output + each module's fp32 input cast
    attention = t * (64 + 2 * 32) * 2 + t * 64 * 2 + 2 * 4 * 8 * 4  # q,k,v + output + fp32 LSE
    mlp = t * 3 * 160 * 2  # silu input, silu output, up output
    assert act.layer_saved(arch, _setting()) == norms + lora + attention + mlp == 39_296


def test_param_wrapper_keeps_the_adapted_expert_weights_by_hand():
    """LoRA on mixtral's router and fused experts (peft ParamWrapper) versus attention only."""
    arch = arch_from_config(TINY_CONFIGS["mixtral"])  # h=64, i=160, E=4 experts, top-2
    base = _setting(lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    wrapped = replace(base, wrapped_targets=("gate.weight", "gate_up_proj", "down_proj"))
    t, a, r = 16, 2, base.lora_r
    adapted = (4 * 64 + 4 * 320 * 64 + 4 * 64 * 160) * a  # W' of router (E x h), gate_up (E x 2i x h), down (E x h x i)
    factors = (r * 2 * 4 * (64 + 320) + r * 4 * (160 + 64)) * a  # bf16 casts of the stacked lora_A/lora_B
    inputs = t * 64 * a + t * 2 * 64 * a + t * 2 * 160 * a  # router input; expert inputs, k = 2 routed copies
    assert act.layer_saved(arch, wrapped) - act.layer_saved(arch, base) == adapted + factors + inputs
    # backward meets down_proj first: its dL/dW' is one more full copy; then gate_up_proj's, once
    # down_proj's W' is released (net 320·64 - 64·160 per expert, smaller here)
    down, gate_up = 4 * 64 * 160 * a, 4 * 320 * 64 * a
    assert act.backward_working(arch, wrapped) - act.backward_working(arch, base) == max(down, gate_up - down)


def test_eager_attention_keeps_the_s_by_s_matrices():
    arch = arch_from_config(TINY_CONFIGS["llama-gqa"])
    sdpa = act.attention_saved(arch, _setting())
    eager = act.attention_saved(arch, _setting(attn="eager"))
    b, n, s = 2, 4, 8
    qkv = 16 * 128 * 2
    assert eager == qkv + 2 * 16 * (64 - 32) * 2 + b * n * s * s * (4 + 2)
    assert sdpa < eager


@pytest.mark.parametrize("attn,device,attention_dropout,o_input_counted", [
    ("sdpa", "cuda", 0.0, False),  # flash / efficient kernel: o_proj reads the saved output
    ("sdpa", "cpu", 0.0, False),  # CPU flash kernel, same layout
    ("sdpa", "cpu", 0.1, True),  # CPU math path (dropout): transpose + reshape copy the output
    ("eager", "cuda", 0.0, True),  # matmul output, transposed and copied before o_proj
], ids=["sdpa-cuda", "sdpa-cpu", "sdpa-cpu-dropout", "eager"])
def test_o_proj_input_is_the_fused_kernels_saved_output(attn, device, attention_dropout, o_input_counted):
    """Full fine-tuning: o_proj keeps its input. A fused kernel's output is laid out (b, s, heads,
    head_dim), so ``transpose(1, 2).reshape`` is a view and that input is the tensor the kernel
    already saved: counted once (found against meta-device simulations, byte-exact per layer)."""
    arch = arch_from_config({**TINY_CONFIGS["llama-gqa"], "attention_dropout": attention_dropout})
    st = _setting(full=True, attn=attn, device=device, lora_targets=())
    o_proj = tuple(m for m in arch.layer_linears if m.role == "o")
    t = st.batch * st.seq
    assert act.linear_inputs_saved(arch, st, o_proj) == (t * arch.q_dim * st.stream_bytes if o_input_counted else 0)


def test_logits_are_upcast_to_fp32():
    arch = arch_from_config(TINY_CONFIGS["llama-gqa"])  # vocab 1000
    st = _setting()
    assert act.logits_forward(arch, st) == 16 * 1000 * (2 + 4)
    assert act.logits_upcast_transient(arch, st) == 16 * 1000 * 4
    # backward: saved log-probs + nll_loss's gradient + log_softmax's gradient, fp32; the bf16 logits
    # are gone (the loop keeps only the loss)
    assert act.logits_backward_peak(arch, st) == 16 * 1000 * 12


def test_tied_trained_embedding_sums_two_gradients():
    from dataclasses import replace as dc_replace

    tied = arch_from_config(TINY_CONFIGS["qwen2-tied"])  # vocab 2000, hidden 96
    assert act.tied_embedding_grad_transient(tied, _setting(full=True)) == 2 * 2000 * 96 * 2
    assert act.tied_embedding_grad_transient(tied, _setting()) == 0  # frozen under LoRA
    untied = dc_replace(tied, tie_word_embeddings=False)
    assert act.tied_embedding_grad_transient(untied, _setting(full=True)) == 0


def test_checkpointing_keeps_only_layer_inputs():
    arch = arch_from_config(TINY_CONFIGS["llama-gqa"])
    st = _setting(gradient_checkpointing=True)
    assert act.layers_saved(arch, st) == 2 * 16 * 64 * 2


def _est(model="llama-2-7b", **kw):
    return estimate(EstimateRequest(model, **kw))


def test_peak_is_the_max_over_phases_not_a_sum():
    est = _est(method="full", device="cpu")
    assert est.peak_allocated_bytes == max(p.allocated_bytes for p in est.phases)
    assert est.peak_allocated_bytes == sum(est.breakdown.values())
    assert {p.name for p in est.phases} == {"load", "forward", "backward", "optimizer_step"}


def test_full_bf16_step_peak_is_weights_grads_states_and_foreach_temp():
    est = _est(method="full", dtype="bf16", batch_size=1, seq_len=128)
    P = 6_738_415_616
    assert est.peak_phase == "optimizer_step"
    b = est.breakdown
    assert (b["weights_bytes"], b["gradients_bytes"], b["optimizer_bytes"], b["optimizer_step_temp_bytes"]) == (
        2 * P + 2 * 64 * 4, 2 * P, 4 * P, 2 * P)  # weights + fp32 rotary buffers


def test_cpu_has_no_runtime_overhead():
    est = _est(method="lora", device="cpu")
    assert est.peak_bytes == est.peak_allocated_bytes
    assert est.breakdown["cuda_context_bytes"] == est.breakdown["allocator_slack_bytes"] == 0


def test_cuda_adds_named_runtime_items():
    est = _est(method="lora", device="cuda")
    runtime = est.breakdown["cuda_context_bytes"] + est.breakdown["allocator_slack_bytes"]
    assert runtime > 0 and est.peak_bytes == est.peak_allocated_bytes + runtime


def test_paged_optimizer_is_reported_outside_the_peak():
    plain = _est(method="full", optimizer="adamw_8bit")
    paged = _est(method="full", optimizer="paged_adamw_8bit")
    assert paged.paged_optimizer_bytes == plain.breakdown["optimizer_bytes"] > 0
    assert paged.peak_allocated_bytes < plain.peak_allocated_bytes


@pytest.mark.parametrize("model", ["llama-2-7b", "mistral-7b", "qwen2.5-1.5b", "gemma-2-9b"])
def test_qlora_below_lora_below_full(model):
    attn = "eager" if model.startswith("gemma-2") else "sdpa"  # transformers has no sdpa for Gemma 2
    peaks = [_est(model, method=m, seq_len=512, attn_implementation=attn).peak_bytes for m in ("qlora", "lora", "full")]
    assert peaks == sorted(peaks) and len(set(peaks)) == 3


def test_inference_kv_cache_is_gqa_aware():
    mha = _est("llama-2-7b", method="inference", batch_size=1, seq_len=1000).breakdown["kv_cache_bytes"]
    gqa = _est("llama-3-8b", method="inference", batch_size=1, seq_len=1000).breakdown["kv_cache_bytes"]
    assert mha == 32 * 2 * 1000 * 4096 * 2  # L x (k, v) x tokens x kv_dim x bf16
    assert gqa == 32 * 2 * 1000 * 1024 * 2  # 8 KV heads of 128


def test_zero3_divides_weights_grads_and_states():
    one = _est("llama-2-70b", method="full", device="cpu")
    eight = _est("llama-2-70b", method="full", device="cpu", sharding="zero3", num_gpus=8)
    step1 = next(p for p in one.phases if p.name == "optimizer_step").terms
    step8 = next(p for p in eight.phases if p.name == "optimizer_step").terms
    for key in ("weights_bytes", "gradients_bytes", "optimizer_bytes"):
        assert step8[key] == -(-step1[key] // 8)


@pytest.mark.parametrize("req", [
    EstimateRequest("llama-2-7b", method="qlora", quant=QuantSpec("nf4", False, 128),
                    lora=LoraSpec(r=8, alpha=4.0, target_modules="all-linear", variant="dora"), batch_size=3),
    EstimateRequest({"config": TINY_CONFIGS["phi3"]}, method="full", dtype="fp16", gradient_checkpointing=True,
                    attn_implementation="eager", device="cpu", optimizer="sgd_momentum"),
    EstimateRequest("mixtral-8x7b", method="inference", seq_len=4096, sharding="zero3", num_gpus=4),
], ids=["qlora-dora", "config-full", "inference-sharded"])
def test_request_document_round_trips(req):
    from tunefit.estimator.document import request_document, request_from_document

    est = estimate(req)
    again = estimate(request_from_document(request_document(est)))
    assert again.request == est.request and again.peak_bytes == est.peak_bytes
