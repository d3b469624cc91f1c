"""GPT-NeoX and Pythia (transformers 5.23 ``models/gpt_neox/modeling_gpt_neox.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, LinearSpec, NormSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared

# transformers 5.23's GPTNeoXConfig: ``__init__`` defaults of the keys read here; its
# ``convert_rope_params_to_dict`` takes the rotary fraction from ``rotary_pct`` (0.25 when absent)
# where ``rope_parameters`` has none, and ignores a top-level ``partial_rotary_factor``.
GPT_NEOX = ConfigClass("GPTNeoXConfig", dict(
    vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64, intermediate_size=24576,
    hidden_act="gelu", max_position_embeddings=2048, tie_word_embeddings=False, use_parallel_residual=True,
    rope_parameters=None, attention_bias=True), kwargs_defaults={"rotary_pct": 0.25})


def build_gpt_neox(c: Config, model_type: str) -> ArchSpec:
    """gpt_neox (Pythia): fused ``query_key_value``, LayerNorm, parallel residual."""
    s = read_shared(c, heads="mha")
    h, inter = s.hidden_size, s.intermediate_size
    bias = c.bool("attention_bias")
    return s.spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("query_key_value", h, 3 * h, bias, role="qkv"),
            LinearSpec("dense", h, h, bias, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, True, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=c.bool("use_parallel_residual"),
        rotary_dim=read_rotary_dim(c, s.head_dim, key="rotary_pct"),
        # v is a view of the fused projection's output, and RoPE concatenates q and k back
        # (``torch.cat([q_embed, q_pass])``, also at full rotary): laid out (b, heads, s, d), as Phi-3's
        v_views_fused_qkv=True,
        attention_output_copied=True,
    )


FAMILIES = {"gpt_neox": Family(GPT_NEOX, build_gpt_neox)}
