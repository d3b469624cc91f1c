"""The validation matrix: CPU measurements of small random-weight models across families,
methods and settings, each case an estimate request.

Cases are drawn from a fixed grid with a fixed seed, so the matrix is the same on every run.
Models come in a ``fit`` size (the shapes the activation terms were checked against while
building the estimator) and a ``holdout`` size (other widths, vocabularies and depths), reported
separately.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from itertools import product

from tunefit.estimator import EstimateError, EstimateRequest, get_model
from tunefit.estimator.adapters import VARIANTS
from tunefit.estimator.arch import ArchSpec, arch_from_config
from tunefit.estimator.catalog import models
from tunefit.estimator.request import normalize, request_from_fields

SEED = 20261123

MODELS: dict[str, tuple[str, dict]] = {
    # name: (split, config)
    "llama-gqa-256": ("fit", dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=2, vocab_size=8000)),
    "llama-gqa-1024": ("holdout", dict(model_type="llama", hidden_size=1024, intermediate_size=2816,
                                       num_hidden_layers=2, num_attention_heads=16, num_key_value_heads=4,
                                       vocab_size=32000)),
    "qwen2-bias-384": ("fit", dict(model_type="qwen2", hidden_size=384, intermediate_size=1024, num_hidden_layers=2,
                                   num_attention_heads=6, num_key_value_heads=2, vocab_size=16000)),
    "qwen2-bias-640": ("holdout", dict(model_type="qwen2", hidden_size=640, intermediate_size=1792,
                                       num_hidden_layers=3, num_attention_heads=10, num_key_value_heads=2,
                                       vocab_size=12000)),
    "gemma-tied-64k": ("fit", dict(model_type="gemma", hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=64, vocab_size=64000)),
    "gemma-tied-512": ("holdout", dict(model_type="gemma", hidden_size=512, intermediate_size=1536,
                                       num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                       head_dim=64, vocab_size=24000)),
    "gpt2-256": ("fit", dict(model_type="gpt2", n_embd=256, n_layer=2, n_head=4, vocab_size=8000, n_positions=2048)),
    "gpt2-512": ("holdout", dict(model_type="gpt2", n_embd=512, n_layer=3, n_head=8, vocab_size=6000,
                                 n_positions=2048)),
    "phi3-256": ("fit", dict(model_type="phi3", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                             num_attention_heads=8, num_key_value_heads=4, vocab_size=8000, pad_token_id=0)),
    "phi3-768": ("holdout", dict(model_type="phi3", hidden_size=768, intermediate_size=2048, num_hidden_layers=2,
                                 num_attention_heads=12, num_key_value_heads=12, vocab_size=4000, pad_token_id=0)),
    "mixtral-moe-128": ("fit", dict(model_type="mixtral", hidden_size=128, intermediate_size=256,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    num_local_experts=4, num_experts_per_tok=2, vocab_size=4000)),
    "mixtral-moe-64": ("holdout", dict(model_type="mixtral", hidden_size=64, intermediate_size=192,
                                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                                       num_local_experts=8, num_experts_per_tok=2, vocab_size=1000)),
    # the families of 2025-26 (issue 17), appended so that the cases above keep their draws
    "qwen3-256": ("fit", dict(model_type="qwen3", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                              num_attention_heads=8, num_key_value_heads=2, head_dim=48, vocab_size=8000)),
    "qwen3-640": ("holdout", dict(model_type="qwen3", hidden_size=640, intermediate_size=1792, num_hidden_layers=3,
                                  num_attention_heads=10, num_key_value_heads=2, head_dim=64, vocab_size=12000)),
    "qwen3_moe-128": ("fit", dict(model_type="qwen3_moe", hidden_size=128, intermediate_size=256,
                                  moe_intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
                                  norm_topk_prob=True, vocab_size=4000)),
    "qwen3_moe-192": ("holdout", dict(model_type="qwen3_moe", hidden_size=192, intermediate_size=384,
                                      moe_intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                                      num_key_value_heads=2, head_dim=32, num_experts=16, num_experts_per_tok=4,
                                      vocab_size=3000)),
    "gemma3_text-256": ("fit", dict(model_type="gemma3_text", hidden_size=256, intermediate_size=1024,
                                    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                                    vocab_size=24000, sliding_window=64, sliding_window_pattern=3)),
    "gemma3_text-384": ("holdout", dict(model_type="gemma3_text", hidden_size=384, intermediate_size=1152,
                                        num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
                                        head_dim=64, vocab_size=16000, sliding_window=128, sliding_window_pattern=2)),
    "olmo2-256": ("fit", dict(model_type="olmo2", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                              num_attention_heads=8, num_key_value_heads=2, vocab_size=8000)),
    "olmo2-448": ("holdout", dict(model_type="olmo2", hidden_size=448, intermediate_size=1216, num_hidden_layers=3,
                                  num_attention_heads=7, num_key_value_heads=7, vocab_size=6000)),
    "smollm3-256": ("fit", dict(model_type="smollm3", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                num_attention_heads=8, num_key_value_heads=2, vocab_size=8000, pad_token_id=0,
                                bos_token_id=0, eos_token_id=0)),
    "smollm3-384": ("holdout", dict(model_type="smollm3", hidden_size=384, intermediate_size=1024,
                                    num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=3,
                                    vocab_size=5000, pad_token_id=0, bos_token_id=0, eos_token_id=0)),
    "granite-256": ("fit", dict(model_type="granite", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                num_attention_heads=8, num_key_value_heads=2, vocab_size=8000,
                                embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0)),
    "granite-384": ("holdout", dict(model_type="granite", hidden_size=384, intermediate_size=1024,
                                    num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=6,
                                    vocab_size=5000, embedding_multiplier=6.0, residual_multiplier=0.5,
                                    logits_scaling=4.0)),
    "gpt_oss-128": ("fit", dict(model_type="gpt_oss", hidden_size=128, intermediate_size=96, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_local_experts=8,
                                num_experts_per_tok=2, sliding_window=64, vocab_size=4000)),
    "gpt_oss-192": ("holdout", dict(model_type="gpt_oss", hidden_size=192, intermediate_size=160,
                                    num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                                    num_local_experts=8, num_experts_per_tok=4, sliding_window=128,
                                    vocab_size=3000)),
    "gemma3-mm-256": ("holdout", dict(model_type="gemma3", text_config=dict(
        hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=64, vocab_size=8000, sliding_window=128, sliding_window_pattern=2), vision_config=dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=56,
        patch_size=14, vision_use_head=False))),
    "mistral3-mm-256": ("holdout", dict(model_type="mistral3", tie_word_embeddings=False, text_config=dict(
        model_type="mistral", hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, head_dim=32, vocab_size=8000), vision_config=dict(
        model_type="pixtral", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        image_size=56, patch_size=14))),
    "llama4-128": ("fit", dict(model_type="llama4_text", hidden_size=128, intermediate_size=96,
                               intermediate_size_mlp=352, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=32, num_local_experts=4, num_experts_per_tok=1,
                               interleave_moe_layer_step=2, attention_chunk_size=128, vocab_size=4000)),
    "llama4-mm-192": ("holdout", dict(model_type="llama4", text_config=dict(
        hidden_size=192, intermediate_size=128, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
        head_dim=32, num_local_experts=8, num_experts_per_tok=1, use_qk_norm=False, attention_chunk_size=64,
        no_rope_layer_interval=3, vocab_size=3000), vision_config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56,
        patch_size=14))),
    "olmo3-256": ("fit", dict(model_type="olmo3", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                              num_attention_heads=8, num_key_value_heads=8, sliding_window=64, vocab_size=8000)),
    "glm4_moe-128": ("fit", dict(model_type="glm4_moe", hidden_size=128, intermediate_size=352,
                                 moe_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=32, n_routed_experts=8, num_experts_per_tok=2,
                                 n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1,
                                 attention_bias=True, use_qk_norm=True, vocab_size=4000)),
    "glm4_moe-192": ("holdout", dict(model_type="glm4_moe", hidden_size=192, intermediate_size=512,
                                     moe_intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                                     num_key_value_heads=2, head_dim=32, n_routed_experts=8, num_experts_per_tok=2,
                                     n_shared_experts=1, first_k_dense_replace=1, vocab_size=3000)),
    "deepseek_v3-128": ("fit", dict(model_type="deepseek_v3", hidden_size=128, intermediate_size=352,
                                    moe_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2,
                                    n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1,
                                    q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                    v_head_dim=32, vocab_size=4000)),
    "deepseek_v3-192": ("holdout", dict(model_type="deepseek_v3", hidden_size=192, intermediate_size=512,
                                        moe_intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                                        num_key_value_heads=6, n_routed_experts=8, num_experts_per_tok=2,
                                        n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                                        q_lora_rank=128, kv_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                        v_head_dim=32, vocab_size=3000)),
    "mistral4-128": ("fit", dict(model_type="mistral4", hidden_size=128, intermediate_size=352,
                                 moe_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                                 first_k_dense_replace=1, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32,
                                 qk_rope_head_dim=16, v_head_dim=32, vocab_size=4000)),
    # the catalog's older families the matrix lacked (issue 18), appended so the cases above keep
    # their draws: GPT-NeoX (parallel residual, fused qkv, partial RoPE), Falcon (MQA, one norm),
    # OPT (learned positions, ReLU, dropout), Gemma 2 (soft-capping, eager only)
    "gpt_neox-256": ("fit", dict(model_type="gpt_neox", hidden_size=256, intermediate_size=1024,
                                 num_hidden_layers=2, num_attention_heads=4, vocab_size=8000)),
    "falcon-256": ("holdout", dict(model_type="falcon", hidden_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, vocab_size=8000)),
    "opt-256": ("fit", dict(model_type="opt", hidden_size=256, ffn_dim=1024, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=8000, word_embed_proj_dim=256)),
    "gemma2-256": ("holdout", dict(model_type="gemma2", hidden_size=256, intermediate_size=1024,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                   vocab_size=8000, sliding_window=128)),
}

METHODS = ("inference", "full", "lora", "qlora", "qlora-no-dq")
BATCHES = (1, 2, 4, 8)
SEQS = (32, 64, 128, 256, 512, 1024)
DTYPES = ("bf16", "fp32")
# b·s caps that keep one case to seconds on a CPU: bf16 matmuls have no fast CPU kernel here, and
# the wide models cost more per token.
MAX_TOKENS = {("bf16", False): 512, ("bf16", True): 256, ("fp32", False): 4096, ("fp32", True): 512}


@dataclass(frozen=True)
class Case:
    id: str
    model: str
    split: str
    request: EstimateRequest


def _text(config: dict) -> dict:
    """The text model's config (a multimodal wrapper's ``text_config``)."""
    return config.get("text_config", config)


def _wide(config: dict) -> bool:
    text = _text(config)
    return text.get("hidden_size", text.get("n_embd", 0)) >= 512 or text["vocab_size"] >= 32000


def _request(config: dict, method: str, dtype: str, batch: int, seq: int, gc: bool, attn: str,
             rng: random.Random) -> EstimateRequest:
    choices: list[tuple[str, ...] | str] = [("q_proj", "v_proj"), "all-linear"]
    targets = rng.choice(choices)
    arch = arch_from_config(config)
    if config["model_type"] == "phi3" and targets != "all-linear":
        targets = ("qkv_proj", "o_proj")
    if targets == "all-linear":
        # peft's all-linear fails on Llama 4 (its router returns a tuple): every other Linear by name
        targets = arch.every_linear_target
    elif not set(targets) <= set(arch.linear_names):
        targets = arch.query_value_target  # W_q and W_v in the family's names (GPT-2's c_attn, MLA's latents)
    # alpha 16 at every rank: the shipped measurements were taken so (alpha changes no memory)
    lora = {"r": rng.choice([4, 8, 16]), "alpha": 16.0, "target_modules": targets}
    base_method = "qlora" if method.startswith("qlora") else method
    # "qlora-no-dq": the same without double quantization
    quant = {"double_quant": method == "qlora"} if base_method == "qlora" else None
    return request_from_fields({"model": {"config": config}, "method": base_method, "dtype": dtype, "lora": lora,
                                "quant": quant, "batch_size": batch, "seq_len": seq, "gradient_checkpointing": gc,
                                "attn_implementation": attn, "device": "cpu"})


def cases(n_per_model: int = 13) -> list[Case]:
    """The matrix: ``n_per_model`` settings for each model, every method represented."""
    rng = random.Random(SEED)
    out = []
    for name, (split, config) in MODELS.items():
        for i in range(n_per_model):
            method = METHODS[i % len(METHODS)]
            dtype = DTYPES[(i // len(METHODS)) % 2] if i % 3 else "bf16"
            if _wide(config) and method != "inference":
                dtype = "fp32"  # 16-bit training of the wide models would take minutes per case here
            cap = MAX_TOKENS[(dtype, _wide(config))]
            batch, seq = rng.choice(BATCHES), rng.choice(SEQS)
            while batch * seq > cap:
                batch, seq = rng.choice(BATCHES), rng.choice(SEQS)
            gc = method != "inference" and rng.random() < 0.5
            attn = rng.choice(["eager", "sdpa"])
            if not arch_from_config(config).supports_sdpa:
                attn = "eager"  # transformers has no sdpa attention for the family (gpt-oss's sinks)
            req = _request(config, method, dtype, batch, seq, gc, attn, rng)
            case_id = f"{name}/{i:02d}-{method}-{dtype}-b{batch}-s{seq}{'-gc' if gc else ''}-{attn}"
            out.append(Case(case_id, name, split, req))
    return out + long_eager_cases() + variant_cases() + recipe_cases()


# (batch, seq): sequences of 512-1,024 tokens under eager attention in bf16, where s×s tensors
# dominate a small model (issue 18: GPT-2's shape there was off by 5-9 %)
LONG_EAGER_SHAPES = ((2, 512), (1, 1024))
LONG_EAGER_METHODS = ("inference", "full", "lora", "qlora")


def long_eager_cases() -> list[Case]:
    """Two settings per model at :data:`LONG_EAGER_SHAPES`, the methods in turn, checkpointing on
    every other training case, and half of them held out, each method as often as the others (the
    split is the case's, not the model's)."""
    rng = random.Random(SEED + 18)
    out = []
    for n, (name, (_, config)) in enumerate(MODELS.items()):
        for j, (batch, seq) in enumerate(LONG_EAGER_SHAPES):
            k = 2 * n + j
            method = LONG_EAGER_METHODS[k % len(LONG_EAGER_METHODS)]
            gc = method != "inference" and (k // len(LONG_EAGER_METHODS)) % 2 == 1
            req = _request(config, method, "bf16", batch, seq, gc, "eager", rng)
            case_id = f"{name}/eager-{method}-bf16-b{batch}-s{seq}{'-gc' if gc else ''}"
            out.append(Case(case_id, name, "holdout" if (n // 2 + j) % 2 else "fit", req))
    return out


# peft's variants beside plain LoRA (issue 18: their memory, not only their counts), on models of
# four families, one fit and one held out each
VARIANT_MODELS = ("llama-gqa-256", "qwen2-bias-640", "qwen3-256", "gemma-tied-512")
VARIANT_METHODS = ("lora", "qlora")


def variant_cases() -> list[Case]:
    """Each variant peft offers but plain LoRA (:data:`VARIANTS`), under LoRA and QLoRA, on every
    Linear with adapter dropout on every other case: batch 2 x 256 in bf16 under sdpa."""
    out = []
    for n, name in enumerate(VARIANT_MODELS):
        split, config = MODELS[name]
        for j, (variant, method) in enumerate(product([v for v in VARIANTS if v != "lora"], VARIANT_METHODS)):
            dropout = 0.1 if (n + j) % 2 else 0.0
            req = request_from_fields({
                "model": {"config": config}, "method": method, "dtype": "bf16", "batch_size": 2, "seq_len": 256,
                "lora": {"r": 8, "alpha": 16.0, "target_modules": "all-linear", "variant": variant, "dropout": dropout},
                "attn_implementation": "sdpa", "device": "cpu"})
            out.append(Case(f"{name}/{variant}-{method}-bf16-b2-s256{'-dropout' if dropout else ''}", name, split, req))
    return out


# The training recipes beside the base one (issue 19), each choice on every model: the fields it
# sets, appended choice by choice so that the cases before keep their draws.
RECIPE_CHOICES: dict[str, dict] = {
    "plain-loop": {"loop": "plain"},
    "grad-accum": {"grad_accum": 2},
    # autocast runs where the weights are in its dtype (the estimator refuses fp32 master weights)
    "autocast-bf16": {"autocast": "bf16", "dtype": "bf16"},
    "autocast-fp16": {"autocast": "fp16", "dtype": "fp16"},
    "chunked-loss": {"loss": "chunked"},
    # TRL SFTTrainer's defaults together (the trl-sft recipe's fields)
    "trl-sft": {"loss": "chunked", "autocast": "bf16", "dtype": "bf16", "gradient_checkpointing": True,
                "optimizer": "adamw_fused"},
    # DPO, its step written after TRL's DPOTrainer (through its fused head, a frozen reference)
    "dpo": {"objective": "dpo"},
    # adapters cast to bf16 after get_peft_model, as TRL casts a quantized model's
    "adapters-bf16": {"adapter_dtype": "bf16"},
    # inference as an evaluation forward with labels (every position's logits and the loss)
    "eval-forward": {"inference_mode": "forward", "gradient_checkpointing": False},
    # generate(): the prompt's prefill, then 128 tokens decoded
    "generate-128": {"new_tokens": 128, "gradient_checkpointing": False},
}
RECIPE_METHODS = ("full", "lora", "qlora")
# fp16 autocast needs fp32 master weights for full fine-tuning (GradScaler refuses fp16 gradients)
RECIPE_CHOICE_METHODS = {"autocast-fp16": ("lora", "qlora"), "adapters-bf16": ("lora", "qlora"),
                         "eval-forward": ("inference",), "generate-128": ("inference",)}
RECIPE_SHAPE = (2, 128)


def _valid(req: EstimateRequest) -> bool:
    """Whether the estimator takes ``req`` (a recipe choice a family cannot run is refused, with the reason)."""
    try:
        normalize(req)
    except EstimateError:
        return False
    return True


def recipe_cases() -> list[Case]:
    """One case per model for each of :data:`RECIPE_CHOICES`: the choice's methods in turn,
    checkpointing on every other case, bf16 (fp32 for the wide models, as :func:`cases`), the
    model's default attention, half of them held out case by case (each choice equally often); a
    choice the estimator refuses for a family (with its reason) has no case there."""
    out = []
    for c, (choice, fields) in enumerate(RECIPE_CHOICES.items()):
        rng = random.Random(f"{SEED}/{choice}")
        methods = RECIPE_CHOICE_METHODS.get(choice, RECIPE_METHODS)
        for n, (name, (_, config)) in enumerate(MODELS.items()):
            method = methods[(n + c) % len(methods)]
            gc = (n // len(RECIPE_METHODS)) % 2 == 1
            dtype = "fp32" if _wide(config) else "bf16"
            attn = "sdpa" if arch_from_config(config).supports_sdpa else "eager"
            batch, seq = RECIPE_SHAPE
            base = _request(config, method, dtype, batch, seq, gc, attn, rng)
            req = replace(base, **fields)
            if not _valid(req):
                continue
            gc_tag = "-gc" if req.gradient_checkpointing else ""
            case_id = f"{name}/{choice}-{method}-{req.dtype}-b{batch}-s{seq}{gc_tag}"
            out.append(Case(case_id, name, "holdout" if (n + c) % 2 else "fit", req))
    return out


# ---- catalog models on the meta device -------------------------------------------------------

SIMULATED_METHODS = ("inference", "full", "lora", "qlora")
# (batch, seq, gradient checkpointing): a short sequence, a middle one, and a long one under
# checkpointing (inference runs it without), the range the estimator is judged on at 1B-405B scale
SIMULATED_SHAPES = ((1, 512, False), (2, 2048, False), (4, 4096, True))


def simulated_models() -> tuple[str, ...]:
    """Every catalog model (issue 18): the sweep holds each one, and each one the catalog gains."""
    return tuple(sorted(models()))


def simulated_shapes(arch: ArchSpec) -> tuple[tuple[int, int, bool], ...]:
    """:data:`SIMULATED_SHAPES`, and a sequence of twice the widest window where no shape passes it
    (Mistral's 4,096-token window, Llama 4's 8,192-token chunks)."""
    widest = max(arch.layer_windows, default=0)
    longest = max(seq for _, seq, _ in SIMULATED_SHAPES)
    return SIMULATED_SHAPES + (((1, 2 * widest, False),) if widest >= longest else ())


def simulation_cases() -> list[Case]:
    """Catalog models simulated for CUDA in bf16: LoRA r=8 on W_q, W_v (the LoRA paper's setting),
    QLoRA r=16 on every linear layer with NF4 + double quantization (the QLoRA paper's; Llama 4's
    router aside, which peft cannot wrap); then the recipe choices the meta device runs
    (:func:`recipe_simulation_cases`)."""
    out = []
    for model in simulated_models():
        arch = get_model(model).arch
        for method in SIMULATED_METHODS:
            for batch, seq, gc in simulated_shapes(arch):
                gc = gc and method != "inference"
                req = _simulated_request(model, arch, method, batch, seq, gc)
                out.append(Case(f"{model}/{method}-b{batch}-s{seq}{'-gc' if gc else ''}", model, "simulation", req))
    return out + recipe_simulation_cases()


def _simulated_request(model: str, arch: ArchSpec, method: str, batch: int, seq: int, gc: bool,
                       **fields: object) -> EstimateRequest:
    every = arch.every_linear_target
    lora = ({"r": 16, "target_modules": every if isinstance(every, str) else list(every)} if method == "qlora"
            else {"r": 8, "target_modules": list(arch.query_value_target)})
    attn = "sdpa" if arch.supports_sdpa else "eager"
    return request_from_fields({"model": model, "method": method, "dtype": "bf16", "lora": lora,
                                "batch_size": batch, "seq_len": seq, "gradient_checkpointing": gc,
                                "attn_implementation": attn, "device": "cuda", **fields})


# The recipe choices the meta device can run (autocast it cannot: torch has no autocast for it),
# one shape, each catalog model once per choice (issue 19)
SIMULATED_RECIPE_CHOICES = ("plain-loop", "grad-accum")
SIMULATED_RECIPE_SHAPE = (2, 1024)


def recipe_simulation_cases() -> list[Case]:
    """Each catalog model under each of :data:`SIMULATED_RECIPE_CHOICES`, simulated for CUDA at
    :data:`SIMULATED_RECIPE_SHAPE`: full, LoRA and QLoRA in turn (settings as :func:`simulation_cases`),
    checkpointing on every other model."""
    out = []
    batch, seq = SIMULATED_RECIPE_SHAPE
    for c, choice in enumerate(SIMULATED_RECIPE_CHOICES):
        for n, model in enumerate(simulated_models()):
            arch = get_model(model).arch
            method = RECIPE_METHODS[(n + c) % len(RECIPE_METHODS)]
            gc = n % 2 == 1
            req = _simulated_request(model, arch, method, batch, seq, gc, **RECIPE_CHOICES[choice])
            case_id = f"{model}/{choice}-{method}-b{batch}-s{seq}{'-gc' if gc else ''}"
            out.append(Case(case_id, model, "simulation", req))
    return out
