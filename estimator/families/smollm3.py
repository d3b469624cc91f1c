"""SmolLM3 (transformers 5.23 ``models/smollm3/modeling_smollm3.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, NormSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, gated_mlp_linears, read_layer_types, window

# transformers 5.23's SmolLM3Config: ``__init__`` defaults of the keys read here.
SMOLLM3 = ConfigClass("SmolLM3Config", dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
    num_key_value_heads=4, hidden_act="silu", max_position_embeddings=32768, use_sliding_window=False,
    sliding_window=None, no_rope_layers=None, no_rope_layer_interval=4, layer_types=None, attention_bias=False,
    attention_dropout=0.0, mlp_bias=False, tie_word_embeddings=True))


def build_smollm3(c: Config, model_type: str) -> ArchSpec:
    """smollm3 (transformers ``modeling_smollm3``): Llama's layer, with RoPE skipped on the layers
    ``no_rope_layers`` marks 0 (by default every ``no_rope_layer_interval``-th, 4). A NoPE layer's
    q and k reach attention as views of their projections, the same bytes a rotated copy takes, so
    memory does not tell the layers apart; with ``use_sliding_window`` the NoPE layers slide."""
    s = read_shared(c)
    h, L = s.hidden_size, s.num_hidden_layers
    interval = c.int("no_rope_layer_interval")
    rope = c.choices("no_rope_layers", (0, 1), L) or tuple(int((i + 1) % interval != 0) for i in range(L))
    w = window(c, c.bool("use_sliding_window"))
    bias = c.bool("attention_bias")
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        sliding_window=w,
        layer_types=read_layer_types(c, L, w, lambda i: not rope[i]),
        layer_linears=(attention_linears(s, bias, bias)
                       + gated_mlp_linears(h, s.intermediate_size, c.bool("mlp_bias"))),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        rotary_dim=read_rotary_dim(c, s.head_dim),
    )


FAMILIES = {"smollm3": Family(SMOLLM3, build_smollm3)}
