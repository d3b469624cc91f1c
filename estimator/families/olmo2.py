"""OLMo 2 and OLMo 3 (transformers 5.23 ``models/olmo2/modeling_olmo2.py``,
``models/olmo3/modeling_olmo3.py``).
"""

from __future__ import annotations

from ..spec import ArchSpec, NormSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, gated_mlp_linears, qk_norms, read_layer_types, window

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here.
OLMO2 = ConfigClass("Olmo2Config", dict(
    vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048, tie_word_embeddings=False,
    attention_bias=False, attention_dropout=0.0))
OLMO3 = ConfigClass("Olmo3Config", {**OLMO2.defaults, "sliding_window": 4096, "layer_types": None})


def build_olmo2(c: Config, model_type: str) -> ArchSpec:
    """olmo2 and olmo3 (transformers ``modeling_olmo2``/``modeling_olmo3``): norms after attention and
    after the MLP (no input norm), ``q_norm``/``k_norm`` over the whole q and k projections;
    OLMo 3 adds sliding-window layers (``layer_types``; three of every four slide by default).
    Its RMSNorm scales in fp32 and casts after (``(w * x).to(dtype)``)."""
    s = read_shared(c)
    h, L = s.hidden_size, s.num_hidden_layers
    bias = c.bool("attention_bias")
    olmo3 = model_type == "olmo3"
    w = window(c, olmo3)
    layer_types = read_layer_types(c, L, w, lambda i: (i + 1) % 4 != 0) if olmo3 else ()
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        sliding_window=w,
        layer_types=layer_types,
        rotary_tables=len(set(layer_types)) or 1,
        layer_linears=attention_linears(s, bias, bias) + gated_mlp_linears(h, s.intermediate_size, False),
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True),) * 2,
        post_norm=True,
        qk_norms=qk_norms(s, per_head=False, fp32_scale=True),
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True),
        rotary_dim=read_rotary_dim(c, s.head_dim),
    )


FAMILIES = {"olmo2": Family(OLMO2, build_olmo2), "olmo3": Family(OLMO3, build_olmo2)}
