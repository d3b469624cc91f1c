"""Phi-3 (transformers 5.23 ``models/phi3/modeling_phi3.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, LinearSpec, NormSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import window

# transformers 5.23's Phi3Config: ``__init__`` defaults of the keys read here.
PHI3 = ConfigClass("Phi3Config", dict(
    vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, hidden_act="silu", max_position_embeddings=4096, tie_word_embeddings=False,
    sliding_window=None))


def build_phi3(c: Config, model_type: str) -> ArchSpec:
    """phi3: fused ``qkv_proj`` and ``gate_up_proj``, RMSNorm, no biases."""
    s = read_shared(c)
    h, d, inter = s.hidden_size, s.head_dim, s.intermediate_size
    heads, kv = s.num_attention_heads, s.num_key_value_heads
    return s.spec(
        model_type,
        gated_mlp=True,
        sliding_window=window(c),
        v_views_fused_qkv=True,
        attention_output_copied=True,
        layer_linears=(
            LinearSpec("qkv_proj", h, (heads + 2 * kv) * d, False, role="qkv"),
            LinearSpec("o_proj", heads * d, h, False, role="o"),
            LinearSpec("gate_up_proj", h, 2 * inter, False, role="mlp_in"),
            LinearSpec("down_proj", inter, h, False, role="mlp_out"),
        ),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        rotary_dim=read_rotary_dim(c, d),
    )


FAMILIES = {"phi3": Family(PHI3, build_phi3)}
