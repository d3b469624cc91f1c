"""Granite (transformers 5.23 ``models/granite/modeling_granite.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, NormSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, gated_mlp_linears

# transformers 5.23's GraniteConfig: ``__init__`` defaults of the keys read here.
GRANITE = ConfigClass("GraniteConfig", dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048, tie_word_embeddings=False,
    attention_bias=False, attention_dropout=0.0, mlp_bias=False))


def build_granite(c: Config, model_type: str) -> ArchSpec:
    """granite (transformers ``modeling_granite``): Llama's modules and names; its multipliers
    (``embedding_multiplier``, ``residual_multiplier``, ``attention_multiplier``, ``logits_scaling``)
    add no parameter; the residual one makes a gradient copy in each layer's backward."""
    s = read_shared(c)
    bias = c.bool("attention_bias")
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        layer_linears=(attention_linears(s, bias, bias)
                       + gated_mlp_linears(s.hidden_size, s.intermediate_size, c.bool("mlp_bias"))),
        layer_norms=(NormSpec("rmsnorm", s.hidden_size),) * 2,
        final_norm=NormSpec("rmsnorm", s.hidden_size),
        rotary_dim=read_rotary_dim(c, s.head_dim),
        residual_scaled=True,
        embeddings_rescaled=True,
    )


FAMILIES = {"granite": Family(GRANITE, build_granite)}
