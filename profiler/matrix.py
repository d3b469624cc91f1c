"""The validation matrix: CPU measurements of small random-weight models across families,
methods and settings, each case an estimate request.

Cases are drawn from a fixed grid with a fixed seed, so the matrix is the same on every run.
Models come in a ``fit`` size (the shapes the activation terms were checked against while
building the estimator) and a ``holdout`` size (other widths, vocabularies and depths), reported
separately.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunefit.estimator import EstimateRequest
from tunefit.estimator.request import request_from_fields

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


def _wide(config: dict) -> bool:
    return config.get("hidden_size", config.get("n_embd", 0)) >= 512 or config["vocab_size"] >= 32000


def _request(config: dict, method: str, dtype: str, batch: int, seq: int, gc: bool, attn: str,
             rng: random.Random) -> EstimateRequest:
    choices: list[tuple[str, ...] | str] = [("q_proj", "v_proj"), "all-linear"]
    targets = rng.choice(choices)
    if config["model_type"] == "gpt2" and targets != "all-linear":
        targets = ("c_attn",)
    if config["model_type"] == "phi3" and targets != "all-linear":
        targets = ("qkv_proj", "o_proj")
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
            req = _request(config, method, dtype, batch, seq, gc, attn, rng)
            case_id = f"{name}/{i:02d}-{method}-{dtype}-b{batch}-s{seq}{'-gc' if gc else ''}-{attn}"
            out.append(Case(case_id, name, split, req))
    return out


# ---- catalog models on the meta device -------------------------------------------------------

SIMULATED_MODELS = ("llama-2-7b", "llama-3-8b", "mistral-7b", "llama-2-70b")
SIMULATED_METHODS = ("inference", "full", "lora", "qlora")
# (batch, seq, gradient checkpointing): batch 1-8 and sequences 512-4096, the range the
# estimator is judged on at 7B-70B scale
SIMULATED_SHAPES = ((1, 512, False), (4, 1024, False), (2, 2048, False), (8, 4096, False), (4, 4096, True))


def simulation_cases() -> list[Case]:
    """Catalog models simulated for CUDA in bf16: LoRA r=8 on q, v (the LoRA paper's setting),
    QLoRA r=16 on every linear layer with NF4 + double quantization (the QLoRA paper's)."""
    out = []
    for model in SIMULATED_MODELS:
        for method in SIMULATED_METHODS:
            for batch, seq, gc in SIMULATED_SHAPES:
                gc = gc and method != "inference"
                lora = ({"r": 16, "target_modules": "all-linear"} if method == "qlora"
                        else {"r": 8, "target_modules": ["q_proj", "v_proj"]})
                req = request_from_fields({"model": model, "method": method, "dtype": "bf16", "lora": lora,
                                           "batch_size": batch, "seq_len": seq, "gradient_checkpointing": gc,
                                           "device": "cuda"})
                out.append(Case(f"{model}/{method}-b{batch}-s{seq}{'-gc' if gc else ''}", model, "simulation", req))
    return out
