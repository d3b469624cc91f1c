"""Falcon (transformers 5.23 ``models/falcon/modeling_falcon.py``)."""

from __future__ import annotations

from dataclasses import replace

from ..spec import ArchSpec, LinearSpec, NormSpec
from .config import Config, ConfigClass, Family, read_shared

# transformers 5.23's FalconConfig: ``__init__`` defaults of the keys read here (its MLP's width is
# ``ffn_hidden_size``, None: four times ``hidden_size``; its activation ``activation``); its
# ``__post_init__`` still reads an old config's ``n_embed`` as ``hidden_size``, and prefers it.
FALCON = ConfigClass("FalconConfig", dict(
    vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71, num_ln_in_parallel_attn=None,
    num_kv_heads=None, alibi=False, new_decoder_architecture=False, multi_query=True, parallel_attn=True,
    bias=False, max_position_embeddings=2048, ffn_hidden_size=None, activation="gelu", tie_word_embeddings=True),
    legacy_names={"n_embed": "hidden_size"})


def build_falcon(c: Config, model_type: str) -> ArchSpec:
    """falcon: ``FalconLinear`` (an nn.Linear subclass bitsandbytes leaves unquantized), MQA/GQA."""
    s = read_shared(c, intermediate="ffn_hidden_size", act="activation", heads="mha", intermediate_factor=4)
    h, heads, d, inter = s.hidden_size, s.num_attention_heads, s.head_dim, s.intermediate_size
    # k and v heads: num_kv_heads in the new decoder architecture, else one (multi_query) or one per head.
    new_arch = c.bool("new_decoder_architecture")
    multi_query = c.bool("multi_query")
    if new_arch:
        kv = c.optional_int("num_kv_heads") or heads
    elif multi_query:
        kv = 1
    else:
        kv = heads
    qkv_out = (heads + 2 * kv) * d
    bias = c.bool("bias")
    parallel = c.bool("parallel_attn")
    n_ln = c.optional_int("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 if (not parallel or n_ln == 2) else 1
    return replace(s, num_key_value_heads=kv).spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("query_key_value", h, qkv_out, bias, quantizable=False, role="qkv"),
            LinearSpec("dense", h, h, bias, quantizable=False, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, bias, quantizable=False, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, bias, quantizable=False, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * norms,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=parallel,
        repeats_kv=False,
        mask_materialized=True,
        softmax_fp32=False,  # eager: ``F.softmax(scores + mask, dim=-1, dtype=hidden_states.dtype)``
        rotary_dim=0 if c.bool("alibi") else d,
    )


FAMILIES = {"falcon": Family(FALCON, build_falcon)}
