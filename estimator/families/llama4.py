"""Llama 4: the text model and the wrapper's config (transformers 5.23
``models/llama4/modeling_llama4.py``: ``Llama4ForCausalLM``).
"""

from __future__ import annotations

from dataclasses import replace

from ..spec import ArchSpec, LinearSpec, NormSpec, ParamTarget
from .config import MAX_WINDOW, Config, ConfigClass, Family, read_shared, sub_config
from .layers import attention_linears, gated_mlp_linears
from .moe import with_dense_layers

LLAMA4_ATTENTION_TYPES = ("full_attention", "chunked_attention")

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here (``head_dim``
# and ``num_key_value_heads`` null: derived as Llama's; ``moe_layers`` and ``no_rope_layers`` null:
# from their intervals), and their attribute_maps. Of the wrapper only ``text_config`` is read: the
# model built is the text model's, tied as ``text_config`` says.
LLAMA4_TEXT = ConfigClass("Llama4TextConfig", dict(
    vocab_size=202048, hidden_size=5120, intermediate_size=8192, intermediate_size_mlp=16384, num_hidden_layers=48,
    num_attention_heads=40, num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=131072,
    tie_word_embeddings=False, attention_dropout=0.0, num_experts_per_tok=1, num_local_experts=16, moe_layers=None,
    interleave_moe_layer_step=1, use_qk_norm=True, no_rope_layers=None, no_rope_layer_interval=4,
    attention_chunk_size=8192, layer_types=None, attn_temperature_tuning=True, attention_bias=False))
LLAMA4 = ConfigClass("Llama4Config", dict(text_config=None),
                     attribute_map={"image_token_id": "image_token_index", "boi_token_id": "boi_token_index",
                                    "eoi_token_id": "eoi_token_index"})


def build_llama4_text(c: Config, model_type: str) -> ArchSpec:
    """llama4_text (transformers ``modeling_llama4``, the text model of Llama 4 Scout and Maverick):
    GQA attention whose layers alternate between RoPE with chunked attention and no RoPE with full
    attention (``no_rope_layers``, else every ``no_rope_layer_interval``-th layer has none), RoPE in
    complex fp32, L2 q/k norms on the RoPE layers (``use_qk_norm``), a temperature on the others
    (``attn_temperature_tuning``). The MoE layers (``moe_layers``, else every
    ``interleave_moe_layer_step``-th) hold a router, an ``nn.Linear`` subclass bitsandbytes leaves
    alone, ``num_local_experts`` experts fused as ``gate_up_proj (E, h, 2i)``, ``down_proj (E, i, h)``
    and a shared expert of Linears ``intermediate_size`` wide; every expert runs on every token. The
    other layers are dense, ``intermediate_size_mlp`` wide. peft 0.21 has no conversion table for
    llama4: no LoRA target reaches the fused experts."""
    s = read_shared(c)
    h, L, inter = s.hidden_size, s.num_hidden_layers, s.intermediate_size
    experts = c.int("num_local_experts")
    interval = c.int("no_rope_layer_interval")
    # Llama4TextConfig.__post_init__: an absent, null or empty ``no_rope_layers`` follows the interval
    given_rope = c.choices("no_rope_layers", (0, 1), L) if c.get("no_rope_layers") else None
    no_rope = given_rope or tuple(int((i + 1) % interval != 0) for i in range(L))
    chunk = c.optional_int("attention_chunk_size", maximum=MAX_WINDOW) or 0
    given = c.choices("layer_types", LLAMA4_ATTENTION_TYPES, L)
    layer_types = given or tuple(LLAMA4_ATTENTION_TYPES[r] for r in no_rope)
    step = c.int("interleave_moe_layer_step")
    given_moe = c.layer_indices("moe_layers", L)
    moe = set(range(step - 1, L, step) if given_moe is None else given_moe)
    bias = c.bool("attention_bias")
    attention = attention_linears(s, bias, bias)
    sparse = s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        attention_chunk_size=chunk,
        layer_types=layer_types,
        no_rope_layers=no_rope,
        rope_complex=True,
        l2_qk_norm=c.bool("use_qk_norm"),
        query_position_scale="nope_fp32" if c.bool("attn_temperature_tuning") else "",
        layer_linears=attention + (LinearSpec("router", h, experts, False, quantizable=False, role="router",
                                              returns_tuple=True),
                                   *gated_mlp_linears(h, inter, False)),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok"),
        router="top_k_sigmoid",
        expert_dispatch="all",
        attention_output_held=True,
        shared_experts=True,
        layer_param_targets=(
            ParamTarget("gate_up_proj", (), experts, h, 2 * inter, "expert_in", transposed=True),
            ParamTarget("down_proj", (), experts, inter, h, "expert_out", transposed=True),
        ),
        rotary_dim=s.head_dim,
        softmax_fp32=False,  # its eager attention keeps the softmax in the stream's dtype
    )
    dense = tuple(i for i in range(L) if i not in moe)
    mlp = c.int("intermediate_size_mlp")
    return with_dense_layers(sparse, dense, attention + gated_mlp_linears(h, mlp, False), mlp)


def build_llama4(c: Config, model_type: str) -> ArchSpec:
    """llama4 (Llama 4 Scout and Maverick's ``config.json``): ``AutoModelForCausalLM`` maps it to
    transformers' ``Llama4ForCausalLM``, built from ``text_config`` alone (Llama4TextConfig's
    defaults for what it leaves out): the llama4_text model. The vision tower and projector of
    ``Llama4ForConditionalGeneration`` are not built (Scout: 871,932,416 parameters more)."""
    text = build_llama4_text(sub_config(c, "text_config", LLAMA4_TEXT, absent={}), "llama4_text")
    return replace(text, model_type=model_type)


FAMILIES = {"llama4_text": Family(LLAMA4_TEXT, build_llama4_text), "llama4": Family(LLAMA4, build_llama4)}
