"""Llama and the families transformers 5.23 builds with Llama's layer: ``models/llama``,
``models/mistral``, ``models/mixtral``, ``models/qwen2``, ``models/gemma``, ``models/gemma2``
(``modeling_<family>.py``, read as ``configuration_<family>.py``): RMSNorm, RoPE, a gated MLP
(Mixtral: fused experts), GQA.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..spec import ArchSpec, LinearSpec, NormSpec, ParamTarget
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, gated_mlp_linears, max_window_layers_windows, read_layer_types, window
from .moe import fused_experts

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here (None: the
# class derives the value, ``num_key_value_heads`` from the heads, ``head_dim`` from hidden / heads).
LLAMA = ConfigClass("LlamaConfig", dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, head_dim=None, hidden_act="silu", max_position_embeddings=2048,
    tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0))
MISTRAL = ConfigClass("MistralConfig", dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=None, hidden_act="silu", max_position_embeddings=131072,
    tie_word_embeddings=False, sliding_window=4096, attention_dropout=0.0))
MIXTRAL = ConfigClass("MixtralConfig", dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=None, hidden_act="silu", max_position_embeddings=131072,
    tie_word_embeddings=False, sliding_window=None, attention_dropout=0.0, num_experts_per_tok=2,
    num_local_experts=8), attribute_map={"num_experts": "num_local_experts"})
QWEN2 = ConfigClass("Qwen2Config", dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, hidden_act="silu", max_position_embeddings=32768, tie_word_embeddings=False,
    use_sliding_window=False, sliding_window=4096, max_window_layers=28, layer_types=None, attention_dropout=0.0))
GEMMA = ConfigClass("GemmaConfig", dict(
    vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=16, head_dim=256, hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192,
    tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0))
GEMMA2 = ConfigClass("Gemma2Config", dict(
    vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
    tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0, sliding_window=4096, layer_types=None,
    final_logit_softcapping=30.0, attn_logit_softcapping=50.0))


def build_llama_like(c: Config, model_type: str) -> ArchSpec:
    """llama, mistral, mixtral, qwen2, gemma, gemma2: RMSNorm, RoPE, gated MLP, GQA."""
    gemma, gemma2 = model_type in ("gemma", "gemma2"), model_type == "gemma2"
    s = read_shared(c, act="hidden_activation" if gemma2 else "hidden_act")
    if model_type == "gemma" and s.hidden_act == "gelu":
        # GemmaConfig.__post_init__: the official releases' "gelu" means the tanh approximation
        s = replace(s, hidden_act="gelu_pytorch_tanh")
    h, d, inter = s.hidden_size, s.head_dim, s.intermediate_size
    qkv_bias, o_bias, mlp_bias = _biases(c, model_type)
    n_experts = 0
    param_targets: tuple[ParamTarget, ...] = ()
    if model_type == "mixtral":
        n_experts = c.int("num_local_experts")
        mlp: tuple[LinearSpec, ...] = ()
        param_targets = fused_experts(h, inter, n_experts, (("w1", "w3"), ("w2",)))
    else:
        mlp = gated_mlp_linears(h, inter, mlp_bias)
    # Gemma2Config's soft-capping (null: none); the others have none
    softcaps = {k: (c.number(k) or 0.0) if gemma2 else 0.0
                for k in ("attn_logit_softcapping", "final_logit_softcapping")}
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        **_windows(c, model_type, s.num_hidden_layers),
        layer_linears=attention_linears(s, qkv_bias, o_bias) + mlp,
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=gemma, unit_offset=gemma),) * (4 if gemma2 else 2),
        final_norm=NormSpec("rmsnorm", h, fp32_scale=gemma, unit_offset=gemma),
        **softcaps,
        num_local_experts=n_experts,
        num_experts_per_tok=c.int("num_experts_per_tok") if n_experts else 0,
        norm_topk_prob=bool(n_experts),  # Mixtral's router always renormalizes its top-k weights
        routing_weights_fp32=bool(n_experts),
        layer_param_targets=param_targets,
        rotary_dim=read_rotary_dim(c, d),
        embed_scale_buffer=gemma,
        supports_sdpa=not gemma2,
    )


def _biases(c: Config, model_type: str) -> tuple[bool, bool, bool]:
    """(q/k/v, o_proj, MLP) biases as each ``modeling_<family>.py`` builds its Linears: Llama reads
    ``attention_bias`` and ``mlp_bias``; Gemma and Gemma 2 ``attention_bias`` only; Qwen2 biases q,
    k and v always and o_proj never; Mistral's and Mixtral's are bias-free. A flag the family's code
    does not read is ignored, as transformers ignores it."""
    if model_type == "qwen2":
        return True, False, False
    attention = model_type in ("llama", "gemma", "gemma2") and c.bool("attention_bias")
    return attention, attention, model_type == "llama" and c.bool("mlp_bias")


def _windows(c: Config, model_type: str, layers: int) -> dict[str, Any]:
    """Sliding-window attention: Mistral's and Mixtral's every layer within ``sliding_window``
    (MistralConfig: 4,096 by default, MixtralConfig: none; null: none); Qwen2's layers from
    ``max_window_layers`` on with ``use_sliding_window`` (Qwen2Config's ``layer_types``); Gemma 2's
    every other layer, the first one sliding (``(i + 1) % 2``); Llama and Gemma none."""
    if model_type in ("mistral", "mixtral"):
        return {"sliding_window": window(c)}
    if model_type == "qwen2":
        return max_window_layers_windows(c, layers)
    if model_type == "gemma2":
        w = window(c)
        return {"sliding_window": w, "layer_types": read_layer_types(c, layers, w, lambda i: (i + 1) % 2 == 1)}
    return {}


FAMILIES = {t: Family(config_class, build_llama_like) for t, config_class in (
    ("llama", LLAMA), ("mistral", MISTRAL), ("mixtral", MIXTRAL), ("qwen2", QWEN2), ("gemma", GEMMA),
    ("gemma2", GEMMA2))}
