"""DeepSeek-V3 and Mistral 4: multi-head latent attention on a MoE with shared experts
(transformers 5.23 ``models/deepseek_v3/modeling_deepseek_v3.py``, ``models/mistral4/modeling_mistral4.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import ArchSpec, LinearSpec, MlaSpec, NormSpec
from .config import Config, ConfigClass, Family, read_shared
from .moe import QWEN2_MOE_NAMES, GroupedRouter, first_layers_dense, grouped_moe

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here (the number
# of key/value heads is not read: latent attention has one latent for all heads), and their
# attribute_maps. A null ``q_lora_rank``: a plain ``q_proj``, no q latent.
DEEPSEEK_V3 = ConfigClass("DeepseekV3Config", dict(
    vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
    num_attention_heads=128, n_shared_experts=1, n_routed_experts=256, kv_lora_rank=512, q_lora_rank=1536,
    qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
    first_k_dense_replace=3, norm_topk_prob=True, hidden_act="silu", max_position_embeddings=4096,
    tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0),
    attribute_map={"num_local_experts": "n_routed_experts", "num_mtp_layers": "num_nextn_predict_layers"})
MISTRAL4 = ConfigClass("Mistral4Config", dict(
    vocab_size=131072, hidden_size=4096, intermediate_size=12288, moe_intermediate_size=2048, num_hidden_layers=36,
    num_attention_heads=32, n_shared_experts=1, n_routed_experts=128, kv_lora_rank=256, q_lora_rank=1024,
    qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=64, n_group=1, topk_group=1, num_experts_per_tok=4,
    first_k_dense_replace=0, norm_topk_prob=True, hidden_act="silu", max_position_embeddings=1048576,
    tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0),
    attribute_map={"num_local_experts": "n_routed_experts"})


@dataclass(frozen=True)
class _Mla:
    """Where DeepSeek-V3's and Mistral 4's layers differ besides their classes' defaults: the router
    and Mistral 4's q scaled per position."""

    router: GroupedRouter
    query_position_scale: str = ""


DEEPSEEK_V3_LAYER = _Mla(GroupedRouter("grouped_sigmoid", True, QWEN2_MOE_NAMES))
MISTRAL4_LAYER = _Mla(GroupedRouter("grouped_softmax", False, ((), ())), query_position_scale="all")


def build_deepseek_v3(c: Config, model_type: str) -> ArchSpec:
    """deepseek_v3 (transformers ``modeling_deepseek_v3``, DeepSeek-V3 and R1): multi-head latent
    attention (``q_a_proj``, ``q_a_layernorm``, ``q_b_proj``; ``kv_a_proj_with_mqa``,
    ``kv_a_layernorm``, ``kv_b_proj``; ``o_proj``), and GLM-4.5's MoE: the first
    ``first_k_dense_replace`` layers dense, the others a grouped-sigmoid router, ``n_routed_experts``
    fused experts and shared experts of Linears. The multi-token-prediction layer of the checkpoint
    is not built by transformers (nor counted here)."""
    return _mla_moe(c, model_type, DEEPSEEK_V3_LAYER)


def build_mistral4(c: Config, model_type: str) -> ArchSpec:
    """mistral4 (transformers ``modeling_mistral4``, Mistral4ForCausalLM): DeepSeek-V3's layers under
    Mistral4Config's defaults, with a router choosing over softmax scores in the stream's dtype (no
    correction bias), q scaled per position (``llama_4_scaling_beta``), no dense layers by default;
    peft 0.21 has no conversion table for it, so no LoRA target reaches its fused experts."""
    return _mla_moe(c, model_type, MISTRAL4_LAYER)


def _mla_moe(c: Config, model_type: str, d: _Mla) -> ArchSpec:
    """Multi-head latent attention on a MoE with shared experts (DeepSeek-V3, Mistral 4)."""
    s = read_shared(c, heads="latent")
    h, heads = s.hidden_size, s.num_attention_heads
    q_lora = c.optional_int("q_lora_rank") or 0
    mla = MlaSpec(q_lora, c.int("kv_lora_rank"), c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim"),
                  c.int("v_head_dim"))
    bias = c.bool("attention_bias")
    qk, rope = mla.qk_head_dim, mla.qk_rope_head_dim
    q_path = ((LinearSpec("q_a_proj", h, q_lora, bias, role="q"),
               LinearSpec("q_b_proj", q_lora, heads * qk, False, role="q_latent")) if q_lora else
              (LinearSpec("q_proj", h, heads * qk, False, role="q"),))
    attention = (*q_path,
                 LinearSpec("kv_a_proj_with_mqa", h, mla.kv_lora_rank + rope, bias, role="k"),
                 LinearSpec("kv_b_proj", mla.kv_lora_rank, heads * (mla.qk_nope_head_dim + mla.v_head_dim), False,
                            role="kv_latent"),
                 LinearSpec("o_proj", heads * mla.v_head_dim, h, bias, role="o"))
    latent_norms = ((NormSpec("rmsnorm", q_lora),) if q_lora else ()) + (NormSpec("rmsnorm", mla.kv_lora_rank),)
    sparse = s.spec(
        model_type,
        **grouped_moe(c, h, attention, d.router),
        qk_norms=latent_norms,
        mla=mla,
        rotary_dim=rope,
        attention_output_copied=True,  # q is concatenated: laid out (b, heads, s, d)
        query_position_scale=d.query_position_scale,
    )
    return first_layers_dense(c, s, sparse, attention)


FAMILIES = {"deepseek_v3": Family(DEEPSEEK_V3, build_deepseek_v3), "mistral4": Family(MISTRAL4, build_mistral4)}
