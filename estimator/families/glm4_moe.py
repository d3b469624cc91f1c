"""GLM-4.5 (transformers 5.23 ``models/glm4_moe/modeling_glm4_moe.py``)."""

from __future__ import annotations

from ..spec import ArchSpec
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, qk_norms
from .moe import QWEN2_MOE_NAMES, GroupedRouter, first_layers_dense, grouped_moe

# transformers 5.23's Glm4MoeConfig: ``__init__`` defaults of the keys read here, its attribute_map,
# and the rotary fraction its ``__post_init__`` sets where a config gives none (0.5).
GLM4_MOE = ConfigClass("Glm4MoeConfig", dict(
    vocab_size=151552, hidden_size=4096, intermediate_size=10944, num_hidden_layers=46, num_attention_heads=96,
    num_key_value_heads=8, hidden_act="silu", max_position_embeddings=131072, tie_word_embeddings=False,
    rope_parameters=None, attention_bias=False, attention_dropout=0.0, moe_intermediate_size=1408,
    num_experts_per_tok=8, n_shared_experts=1, n_routed_experts=128, n_group=1, topk_group=1,
    first_k_dense_replace=1, norm_topk_prob=True, use_qk_norm=False),
    attribute_map={"num_local_experts": "n_routed_experts", "num_mtp_layers": "num_nextn_predict_layers"},
    kwargs_defaults={"partial_rotary_factor": 0.5})
ROUTER = GroupedRouter("grouped_sigmoid", True, QWEN2_MOE_NAMES)


def build_glm4_moe(c: Config, model_type: str) -> ArchSpec:
    """glm4_moe (transformers ``modeling_glm4_moe``, GLM-4.5): GQA attention with biased q/k/v (an
    unbiased o_proj), optional per-head q/k norms (``use_qk_norm``), RoPE on a fraction of each head
    (``partial_rotary_factor``, 0.5 by default); the first ``first_k_dense_replace`` layers dense
    (``intermediate_size``), the others sparse: a grouped-sigmoid router ``(E, h)`` with an fp32
    ``e_score_correction_bias`` buffer, ``n_routed_experts`` fused experts ``moe_intermediate_size``
    wide and ``n_shared_experts`` shared ones as one gated MLP of Linears."""
    s = read_shared(c)
    bias = c.bool("attention_bias")
    attention = attention_linears(s, bias, False)
    qk_norm = c.bool("use_qk_norm")
    rotary_dim = read_rotary_dim(c, s.head_dim)
    sparse = s.spec(
        model_type,
        **grouped_moe(c, s.hidden_size, attention, ROUTER),
        qk_norms=qk_norms(s, per_head=True) if qk_norm else (),
        qk_norm_per_head=qk_norm,
        router_bias_fp32=True,
        rotary_dim=rotary_dim,
        # partial RoPE concatenates the rotated and the passed-through halves: q reaches attention
        # laid out (b, heads, s, d), as Phi-3's does
        attention_output_copied=rotary_dim < s.head_dim,
    )
    return first_layers_dense(c, s, sparse, attention)


FAMILIES = {"glm4_moe": Family(GLM4_MOE, build_glm4_moe)}
