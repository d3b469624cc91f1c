"""Sparse (mixture-of-experts) layers as transformers 5.23 builds them: the experts fused into
3-D parameters behind a router (``models/mixtral/modeling_mixtral.py`` ``MixtralExperts``,
``models/qwen3_moe``), the grouped routers with shared experts of GLM-4.5, DeepSeek-V3 and Mistral 4
(``models/glm4_moe``, ``models/deepseek_v3``, ``models/mistral4``), and the dense layers among
sparse ones (``first_k_dense_replace``, ``mlp_only_layers``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..spec import ArchSpec, LinearSpec, NormSpec, ParamTarget
from .config import MAX_LAYERS, Config, Shared
from .layers import gated_mlp_linears


def fused_experts(h: int, moe_inter: int, experts: int, names: tuple[tuple[str, ...], tuple[str, ...]]
                  ) -> tuple[ParamTarget, ...]:
    """transformers 5's MoE block: a router weight ``(E, h)`` and the experts fused into two 3-D
    parameters (not ``nn.Linear``), ``gate_up_proj (E, 2i, h)`` and ``down_proj (E, h, i)``.
    ``names``: the transformers-4 module names peft 0.21 maps onto them
    (``utils/transformers_weight_conversion.py``, ``_MOE_TARGET_MODULE_MAPPING``; the router's
    ``gate`` with them), none where peft has no table for the family."""
    gate_up, down = names
    return (
        ParamTarget("gate.weight", ("gate",) if gate_up else (), 1, h, experts, "router"),
        ParamTarget("gate_up_proj", gate_up, experts, h, 2 * moe_inter, "expert_in"),
        ParamTarget("down_proj", down, experts, moe_inter, h, "expert_out"),
    )


def with_dense_layers(sparse: ArchSpec, indices: tuple[int, ...], linears: tuple[LinearSpec, ...],
                      intermediate_size: int) -> ArchSpec:
    """``sparse`` with the layers at ``indices`` dense: the same attention, norms and window, an MLP
    of ``linears`` (``intermediate_size`` wide), no experts."""
    if not indices:
        return sparse
    dense = replace(sparse, layer_linears=linears, layer_param_targets=(), num_local_experts=0,
                    num_experts_per_tok=0, moe_intermediate_size=0, norm_topk_prob=False, shared_experts=False,
                    intermediate_size=intermediate_size)
    return replace(sparse, dense_layer_indices=indices, dense_layer=dense)


@dataclass(frozen=True)
class GroupedRouter:
    """Where GLM-4.5, DeepSeek-V3 and Mistral 4 differ in their sparse layers besides their config
    classes' defaults: the router (``router_bias_buffer``: with an ``e_score_correction_bias``
    buffer), and the names peft 0.21 converts for their experts (``transformers_weight_conversion``:
    GLM-4.5 and DeepSeek-V3 through Qwen2 MoE's table; nothing for mistral4)."""

    router: str
    router_bias_buffer: bool
    peft_names: tuple[tuple[str, ...], tuple[str, ...]]


QWEN2_MOE_NAMES = (("gate_proj", "up_proj"), ("down_proj",))


def grouped_moe(c: Config, h: int, attention: tuple[LinearSpec, ...], d: GroupedRouter) -> dict[str, Any]:
    """The sparse layer's fields GLM-4.5, DeepSeek-V3 and Mistral 4 share: ``attention`` and two
    RMSNorms, ``n_routed_experts`` fused experts ``moe_intermediate_size`` wide behind a router
    choosing within the best ``topk_group`` of ``n_group`` groups, and ``n_shared_experts`` shared
    ones as one gated MLP of Linears (the sparse layer's ``intermediate_size`` is their width)."""
    experts, moe_inter = c.int("n_routed_experts"), c.int("moe_intermediate_size")
    shared = moe_inter * c.int("n_shared_experts", minimum=0)
    return dict(
        gated_mlp=True,
        intermediate_size=shared,  # the shared experts' width (the dense layers' is in dense_layer)
        attention_dropout=c.probability("attention_dropout"),
        layer_linears=attention + (gated_mlp_linears(h, shared, False) if shared else ()),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok"),
        moe_intermediate_size=moe_inter,
        norm_topk_prob=c.bool("norm_topk_prob"),
        routing_weights_fp32=d.router == "grouped_sigmoid",
        router=d.router,
        n_group=c.int("n_group"),
        topk_group=c.int("topk_group"),
        shared_experts=bool(shared),
        layer_param_targets=fused_experts(h, moe_inter, experts, d.peft_names),
        router_bias_buffer=experts if d.router_bias_buffer else 0,
    )


def first_layers_dense(c: Config, s: Shared, sparse: ArchSpec, attention: tuple[LinearSpec, ...]) -> ArchSpec:
    """``sparse`` with its first ``first_k_dense_replace`` layers dense: ``attention`` and a gated MLP
    ``intermediate_size`` wide."""
    k = c.int("first_k_dense_replace", minimum=0, maximum=MAX_LAYERS)
    dense = tuple(range(min(k, s.num_hidden_layers)))
    mlp = gated_mlp_linears(s.hidden_size, s.intermediate_size, False)
    return with_dense_layers(sparse, dense, attention + mlp, s.intermediate_size)
