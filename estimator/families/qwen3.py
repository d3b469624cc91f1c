"""Qwen3 and Qwen3 MoE (transformers 5.23 ``models/qwen3/modeling_qwen3.py``,
``models/qwen3_moe/modeling_qwen3_moe.py``).
"""

from __future__ import annotations

from ..spec import ArchSpec, LinearSpec, NormSpec, ParamTarget
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, gated_mlp_linears, max_window_layers_windows, qk_norms, window
from .moe import fused_experts, with_dense_layers

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here. Qwen3-MoE's
# class takes ``num_experts`` and keeps it as ``num_local_experts`` (its attribute_map), the name a
# config it saves spells; it has no ``head_dim`` (hidden / heads unless a config gives one) and no
# ``max_window_layers``.
QWEN3 = ConfigClass("Qwen3Config", dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, head_dim=128, hidden_act="silu", max_position_embeddings=32768,
    tie_word_embeddings=False, attention_bias=False, use_sliding_window=False, sliding_window=4096,
    max_window_layers=28, layer_types=None, attention_dropout=0.0))
QWEN3_MOE = ConfigClass("Qwen3MoeConfig", dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24, num_attention_heads=32,
    num_key_value_heads=4, hidden_act="silu", max_position_embeddings=32768, tie_word_embeddings=False,
    attention_bias=False, use_sliding_window=False, sliding_window=4096, attention_dropout=0.0,
    decoder_sparse_step=1, moe_intermediate_size=768, num_experts_per_tok=8, num_experts=128,
    norm_topk_prob=False, mlp_only_layers=None), attribute_map={"num_experts": "num_local_experts"})


def build_qwen3(c: Config, model_type: str) -> ArchSpec:
    """qwen3 and qwen3_moe (transformers ``modeling_qwen3``/``modeling_qwen3_moe``): Llama's layer with
    ``q_norm``/``k_norm`` RMSNorm(head_dim) on every head before RoPE, no qkv bias, an explicit
    ``head_dim`` (Qwen3Config's default 128, not hidden/heads); sliding window only with
    ``use_sliding_window``: Qwen3 on layers from ``max_window_layers`` on, Qwen3-MoE on every layer
    (its attention reads ``config.sliding_window`` alone). qwen3_moe: every MLP a sparse block of
    ``num_local_experts`` experts ``moe_intermediate_size`` wide, ``num_experts_per_tok`` routed."""
    moe = model_type == "qwen3_moe"
    s = read_shared(c)
    h, L = s.hidden_size, s.num_hidden_layers
    bias = c.bool("attention_bias")
    n_experts, moe_inter = 0, 0
    mlp: tuple[LinearSpec, ...] = gated_mlp_linears(h, s.intermediate_size, False)
    param_targets: tuple[ParamTarget, ...] = ()
    dense_mlp = mlp
    if moe:
        n_experts, moe_inter = c.int("num_local_experts"), c.int("moe_intermediate_size")
        mlp = ()
        param_targets = fused_experts(h, moe_inter, n_experts, (("gate_proj", "up_proj"), ("down_proj",)))
    windows = {"sliding_window": window(c, c.bool("use_sliding_window"))} if moe else max_window_layers_windows(c, L)
    spec = s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        **windows,
        layer_linears=attention_linears(s, bias, bias) + mlp,
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        qk_norms=qk_norms(s, per_head=True),
        qk_norm_per_head=True,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=n_experts,
        num_experts_per_tok=c.int("num_experts_per_tok") if moe else 0,
        moe_intermediate_size=moe_inter,
        norm_topk_prob=moe and c.bool("norm_topk_prob"),
        layer_param_targets=param_targets,
        rotary_dim=read_rotary_dim(c, s.head_dim),
    )
    if not moe:
        return spec
    # transformers' Qwen3MoeDecoderLayer: dense in ``mlp_only_layers`` and wherever
    # ``(index + 1) % decoder_sparse_step`` is not 0
    only = set(c.layer_indices("mlp_only_layers", L) or ())
    step = c.int("decoder_sparse_step")
    dense = tuple(i for i in range(L) if i in only or (i + 1) % step)
    return with_dense_layers(spec, dense, attention_linears(s, bias, bias) + dense_mlp, s.intermediate_size)


FAMILIES = {"qwen3": Family(QWEN3, build_qwen3), "qwen3_moe": Family(QWEN3_MOE, build_qwen3)}
