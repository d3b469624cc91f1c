"""gpt-oss (transformers 5.23 ``models/gpt_oss/modeling_gpt_oss.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, NormSpec, ParamTarget, ParamTensor
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared
from .layers import attention_linears, read_layer_types, window

# transformers 5.23's GptOssConfig: ``__init__`` defaults of the keys read here (``head_dim`` and
# ``num_key_value_heads`` null: derived as Llama's), and its attribute_map.
GPT_OSS = ConfigClass("GptOssConfig", dict(
    num_hidden_layers=36, num_local_experts=128, vocab_size=201088, hidden_size=2880, intermediate_size=2880,
    head_dim=64, num_attention_heads=64, num_key_value_heads=8, sliding_window=128, tie_word_embeddings=False,
    hidden_act="silu", max_position_embeddings=131072, attention_dropout=0.0, num_experts_per_tok=4,
    layer_types=None, attention_bias=True), attribute_map={"num_experts": "num_local_experts"})


def build_gpt_oss(c: Config, model_type: str) -> ArchSpec:
    """gpt_oss (transformers ``modeling_gpt_oss``): biased q/k/v/o, a learned attention ``sinks``
    logit per head, sliding-window and full layers alternating (``layer_types``), and every MLP a
    sparse block: a biased router ``(E, h)`` and the experts fused as ``gate_up_proj (E, h, 2i)``,
    ``down_proj (E, i, h)`` with biases, stored transposed. None is ``nn.Linear``: bitsandbytes
    quantizes none, and peft 0.21 has no conversion table for gpt_oss, so ``all-linear`` reaches
    the attention projections only. transformers offers no sdpa attention for it (the sinks)."""
    s = read_shared(c)
    h, L, inter = s.hidden_size, s.num_hidden_layers, s.intermediate_size
    experts = c.int("num_local_experts")
    w = window(c)
    bias = c.bool("attention_bias")
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        sliding_window=w,
        layer_types=read_layer_types(c, L, w, lambda i: (i + 1) % 2 == 1),
        layer_linears=attention_linears(s, bias, bias),
        layer_tensors=(ParamTensor("sinks", (s.num_attention_heads,), "sink"),),
        attention_sinks=True,
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True),) * 2,  # (w * x).to(dtype), as OLMo 2
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok"),
        router="top_k_softmax",
        expert_gate="clamped_swiglu",
        layer_param_targets=(
            ParamTarget("router.weight", (), 1, h, experts, "router", bias=True),
            ParamTarget("gate_up_proj", (), experts, h, 2 * inter, "expert_in", transposed=True, bias=True),
            ParamTarget("down_proj", (), experts, inter, h, "expert_out", transposed=True, bias=True),
        ),
        rotary_dim=read_rotary_dim(c, s.head_dim),
        supports_sdpa=False,
    )


FAMILIES = {"gpt_oss": Family(GPT_OSS, build_gpt_oss)}
