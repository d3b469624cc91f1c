"""The families of 2025-26 (Qwen3, Qwen3 MoE, Gemma 3, OLMo 2/3, SmolLM3, Granite, gpt-oss, GLM-4.5,
DeepSeek-V3, Mistral 3 and 4, Llama 4): the estimate equals the meta-device simulation of transformers'
own code (target ``cpu``) within 1 %, for inference, full fine-tuning, LoRA and QLoRA, with and
without gradient checkpointing, under sdpa and eager attention, past the sliding window (or
Llama 4's chunk) where the family has one.

Small configs, each wider than the tiny ones of ``tiny_configs.py`` so that per-layer terms (what
a family's mechanism changes: q/k norms, post-norms, routed experts, sliding layers) dominate
the few step-wide kilobytes the simulation also sees.
"""

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

from tunefit.estimator import EstimateRequest, LoraSpec, QuantSpec, estimate  # noqa: E402
from tunefit.estimator.arch import arch_from_config  # noqa: E402
from tunefit.profiler import BuildError, simulate  # noqa: E402

pytestmark = LIBRARY_NOTICES

_BASE = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=2000)
FAMILIES = {
    # q_norm/k_norm RMSNorm(head_dim) on every head; head_dim not hidden / heads
    "qwen3": dict(model_type="qwen3", **_BASE, head_dim=48),
    # 8 experts of moe_intermediate_size, 2 routed, every layer sparse
    "qwen3_moe": dict(model_type="qwen3_moe", **{**_BASE, "num_hidden_layers": 2}, head_dim=32, num_experts=8,
                      num_experts_per_tok=2, moe_intermediate_size=96, norm_topk_prob=True),
    # four (1 + w) fp32 norms, q/k norms, a sliding layer then a full one, two rotary tables, 1 x 32 window
    "gemma3_text": dict(model_type="gemma3_text", **_BASE, head_dim=32, sliding_window=32, sliding_window_pattern=2),
    # norms after attention and MLP, q/k norms over the whole projection, (w * x) in fp32
    "olmo2": dict(model_type="olmo2", **_BASE),
    # three sliding layers of four
    "olmo3": dict(model_type="olmo3", **{**_BASE, "num_hidden_layers": 4}, sliding_window=32),
    # NoPE on every fourth layer (the last one here)
    "smollm3": dict(model_type="smollm3", **{**_BASE, "num_hidden_layers": 4}, pad_token_id=0, bos_token_id=0,
                    eos_token_id=0),
    # sparse blocks with biased experts stored transposed, a clamped gate, a top-k softmax router;
    # attention sinks (eager only); alternating 32-token sliding and full layers
    "gpt_oss": dict(model_type="gpt_oss", **{**_BASE, "intermediate_size": 96}, head_dim=32, num_local_experts=8,
                    num_experts_per_tok=2, sliding_window=32),
    # a dense first layer, then sparse ones: a grouped-sigmoid router (2 groups), fused experts and a
    # shared expert of Linears; biased q/k/v, per-head q/k norms, RoPE on half of each head
    "glm4_moe": dict(model_type="glm4_moe", **{**_BASE, "num_hidden_layers": 3}, head_dim=32,
                     moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                     first_k_dense_replace=1, n_group=2, topk_group=1, attention_bias=True, use_qk_norm=True),
    # multi-head latent attention (q and kv latents, a shared rotated key, v narrower than q and k)
    # and GLM-4.5's MoE behind a dense first layer
    "deepseek_v3": dict(model_type="deepseek_v3", **{**_BASE, "num_hidden_layers": 3, "num_key_value_heads": 4},
                        moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                        first_k_dense_replace=1, n_group=2, topk_group=1, q_lora_rank=96, kv_lora_rank=64,
                        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32),
    # DeepSeek-V3's layers with a softmax router in the stream's dtype, q scaled per position, and
    # experts no LoRA target reaches (peft has no conversion table for mistral4)
    "mistral4": dict(model_type="mistral4", **{**_BASE, "num_hidden_layers": 3, "num_key_value_heads": 4},
                     moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                     first_k_dense_replace=1, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32,
                     qk_rope_head_dim=16, v_head_dim=32),
    # dense layers among the sparse ones (mlp_only_layers, decoder_sparse_step)
    "qwen3_moe-dense": dict(model_type="qwen3_moe", **{**_BASE, "num_hidden_layers": 4}, head_dim=32, num_experts=8,
                            num_experts_per_tok=2, moe_intermediate_size=96, mlp_only_layers=[0],
                            decoder_sparse_step=2),
    # multimodal wrappers on text batches: the tower's weights and adapters are held, never stepped
    "gemma3": dict(model_type="gemma3", text_config=dict(**_BASE, head_dim=32, sliding_window=32,
                                                         sliding_window_pattern=2),
                   vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=56, patch_size=14, vision_use_head=False)),
    "mistral3": dict(model_type="mistral3", tie_word_embeddings=False,
                     text_config=dict(model_type="mistral", **_BASE, head_dim=48),
                     vision_config=dict(model_type="pixtral", hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14)),
    # multipliers on the embedding, residual, attention and logits
    "granite": dict(model_type="granite", **_BASE, embedding_multiplier=12.0, residual_multiplier=0.22,
                    attention_multiplier=0.015625, logits_scaling=8.0),
    # dense and MoE layers alternating (a router, every expert on every token, a shared expert);
    # complex RoPE, L2 q/k norms and 32-token chunks on three layers, the fourth NoPE with a temperature
    "llama4_text": dict(model_type="llama4_text", **{**_BASE, "num_hidden_layers": 4, "intermediate_size": 96},
                        intermediate_size_mlp=352, head_dim=32, num_local_experts=4, num_experts_per_tok=1,
                        interleave_moe_layer_step=2, attention_chunk_size=32),
    # the wrapper's config: AutoModelForCausalLM builds its text model alone
    "llama4": dict(model_type="llama4", text_config=dict(**{**_BASE, "intermediate_size": 96}, head_dim=32,
                                                         num_local_experts=4, use_qk_norm=False,
                                                         attention_chunk_size=32, no_rope_layer_interval=2),
                   vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=56, patch_size=14)),
}

SETTINGS = {  # method, gradient checkpointing, attention: every method, both kernels, checkpointing on and off
    "inference-sdpa": ("inference", False, "sdpa"),
    "full-gc-eager": ("full", True, "eager"),
    "lora-sdpa": ("lora", False, "sdpa"),
    "qlora-gc-sdpa": ("qlora", True, "sdpa"),
}
# (Granite's QLoRA with checkpointing was -1.38 % here: the token embedding's output, a graph leaf
# under checkpointing that its multiplier copies, is held through backward; now counted.)
PHASE_TOLERANCE = 0.03  # phases other than the peak: a checkpointed forward's few recomputed tensors


def _request(family: str, setting: str) -> EstimateRequest:
    method, gc, attn = SETTINGS[setting]
    attn = attn if arch_from_config(FAMILIES[family]).supports_sdpa else "eager"  # gpt-oss's sinks: eager only
    # peft's all-linear wraps Llama 4's router, which returns a tuple, and fails: every other Linear by name
    targets = arch_from_config(FAMILIES[family]).every_linear_target
    return EstimateRequest({"config": FAMILIES[family]}, method=method, device="cpu", dtype="bf16", batch_size=2,
                           seq_len=64, lora=LoraSpec(r=8, alpha=16.0, target_modules=targets),
                           quant=QuantSpec() if method == "qlora" else None, gradient_checkpointing=gc,
                           attn_implementation=attn)


# QLoRA keeps the residual stream in fp32 (prepare_model_for_kbit_training), and transformers'
# grouped-matmul experts reach torch._grouped_mm, whose meta kernel takes bf16 only: the meta
# device cannot run it (held below)
NOT_SIMULATED = {(f, "qlora-gc-sdpa") for f in ("qwen3_moe", "qwen3_moe-dense", "gpt_oss", "glm4_moe", "deepseek_v3",
                                                 "mistral4")}
CASES = [pytest.param(f, s, id=f"{f}-{s}") for f in FAMILIES for s in SETTINGS if (f, s) not in NOT_SIMULATED]


@pytest.mark.parametrize("family,setting", CASES)
def test_the_estimate_equals_the_simulation(family, setting):
    request_ = _request(family, setting)
    simulated = simulate(request_)["measured"]
    est = estimate(request_)
    assert est.peak_allocated_bytes == pytest.approx(simulated["peak_allocated_bytes"], rel=0.01)
    by_phase = {p.name: p.allocated_bytes for p in est.phases}
    for phase, value in simulated["phase_peaks"].items():
        assert by_phase[phase] == pytest.approx(value, rel=PHASE_TOLERANCE), phase


@pytest.mark.parametrize("family,setting", sorted(NOT_SIMULATED), ids=[f"{f}-{s}" for f, s in sorted(NOT_SIMULATED)])
def test_what_the_meta_device_cannot_run_is_refused_with_the_reason(family, setting):
    with pytest.raises(BuildError, match="cannot be simulated on the meta device: .*BF16"):
        simulate(_request(family, setting))
