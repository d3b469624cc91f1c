"""OPT (transformers 5.23 ``models/opt/modeling_opt.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, LinearSpec, NormSpec
from .config import Config, ConfigClass, Family, read_shared

# transformers 5.23's OPTConfig: ``__init__`` defaults of the keys read here (its MLP's width is
# ``ffn_dim``, its activation ``activation_function``; ``word_embed_proj_dim`` None: ``hidden_size``).
OPT = ConfigClass("OPTConfig", dict(
    vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, max_position_embeddings=2048,
    do_layer_norm_before=True, _remove_final_layer_norm=False, word_embed_proj_dim=None, dropout=0.1,
    num_attention_heads=12, activation_function="relu", enable_bias=True, layer_norm_elementwise_affine=True,
    tie_word_embeddings=True))


def build_opt(c: Config, model_type: str) -> ArchSpec:
    """opt: biased Linears, LayerNorm, learned positions with an offset of 2, and a token table
    ``word_embed_proj_dim`` wide (OPT-350m: 512 for hidden_size 1024) that lm_head shares."""
    s = read_shared(c, intermediate="ffn_dim", act="activation_function", heads="mha")
    h, ffn = s.hidden_size, s.intermediate_size
    bias = c.bool("enable_bias")
    affine = c.bool("layer_norm_elementwise_affine")
    pre_norm = c.bool("do_layer_norm_before")
    final = NormSpec("layernorm", h, bias=True, affine=affine)
    keep_final = pre_norm and not c.bool("_remove_final_layer_norm")
    return s.spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("q_proj", h, h, bias, role="q"),
            LinearSpec("k_proj", h, h, bias, role="k"),
            LinearSpec("v_proj", h, h, bias, role="v"),
            LinearSpec("out_proj", h, h, bias, role="o"),
            LinearSpec("fc1", h, ffn, bias, role="mlp_in"),
            LinearSpec("fc2", ffn, h, bias, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True, affine=affine),) * 2,
        final_norm=final if keep_final else None,
        hidden_dropout=c.probability("dropout"),
        word_embed_proj_dim=c.optional_int("word_embed_proj_dim") or h,
        position_embeddings=s.max_position_embeddings + 2,  # OPTLearnedPositionalEmbedding keeps 2 extra rows
        position_ids_per_row=True,
        mlp_inline=True,
    )


FAMILIES = {"opt": Family(OPT, build_opt)}
