"""The decoder layer's parts that most families share, as transformers 5.23 builds them: the
attention projections (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``; ``models/llama/modeling_llama.py``
``LlamaAttention``), the gated MLP (``LlamaMLP``), q/k norms (``models/qwen3``, ``models/olmo2``,
``models/gemma3``) and which layers attend within a sliding window (config.json's ``layer_types``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import LinearSpec, NormSpec
from .config import MAX_LAYERS, MAX_WINDOW, Config, Shared


def attention_linears(s: Shared, qkv_bias: bool, o_bias: bool) -> tuple[LinearSpec, ...]:
    """``q_proj``, ``k_proj``, ``v_proj`` (GQA: ``num_key_value_heads`` wide) and ``o_proj``."""
    h, d, heads, kv = s.hidden_size, s.head_dim, s.num_attention_heads, s.num_key_value_heads
    return (
        LinearSpec("q_proj", h, heads * d, qkv_bias, role="q"),
        LinearSpec("k_proj", h, kv * d, qkv_bias, role="k"),
        LinearSpec("v_proj", h, kv * d, qkv_bias, role="v"),
        LinearSpec("o_proj", heads * d, h, o_bias, role="o"),
    )


def gated_mlp_linears(h: int, inter: int, bias: bool) -> tuple[LinearSpec, ...]:
    """``gate_proj``, ``up_proj`` (``h -> i``) and ``down_proj`` (``i -> h``)."""
    return (
        LinearSpec("gate_proj", h, inter, bias, role="mlp_in"),
        LinearSpec("up_proj", h, inter, bias, role="mlp_in"),
        LinearSpec("down_proj", inter, h, bias, role="mlp_out"),
    )


ATTENTION_TYPES = ("full_attention", "sliding_attention")


def read_layer_types(c: Config, layers: int, window: int, slides: Callable[[int], bool]) -> tuple[str, ...]:
    """Each layer's attention type: config.json's ``layer_types`` where given, else the family's
    rule ``slides(layer_index)`` (no layer slides without a window)."""
    given = c.choices("layer_types", ATTENTION_TYPES, layers)
    if given is not None:
        return given
    return tuple(ATTENTION_TYPES[bool(window) and slides(i)] for i in range(layers))


def qk_norms(s: Shared, per_head: bool, fp32_scale: bool = False, gemma: bool = False) -> tuple[NormSpec, ...]:
    """``q_norm`` and ``k_norm``: RMSNorm over each head (``head_dim``) or over the projection;
    ``gemma``: Gemma's ``1 + w`` in fp32."""
    if per_head:
        return (NormSpec("rmsnorm", s.head_dim, fp32_scale=fp32_scale or gemma, unit_offset=gemma),) * 2
    return (NormSpec("rmsnorm", s.num_attention_heads * s.head_dim, fp32_scale=fp32_scale),
            NormSpec("rmsnorm", s.num_key_value_heads * s.head_dim, fp32_scale=fp32_scale))


def window(c: Config, enabled: bool = True) -> int:
    """``sliding_window`` where the family slides (``enabled``: its flag, as Qwen3's
    ``use_sliding_window``): as given, else the class's default; 0 when null (no window)."""
    return (c.optional_int("sliding_window", maximum=MAX_WINDOW) or 0) if enabled else 0


def max_window_layers_windows(c: Config, layers: int) -> dict[str, Any]:
    """Qwen2's and Qwen3's sliding layers (``Qwen2Config.__post_init__``, ``Qwen3Config``'s alike):
    ``sliding_window`` only with ``use_sliding_window``, on the layers from ``max_window_layers`` on,
    unless config.json lists ``layer_types``."""
    w = window(c, c.bool("use_sliding_window"))
    first = c.int("max_window_layers", minimum=0, maximum=MAX_LAYERS)
    return {"sliding_window": w, "layer_types": read_layer_types(c, layers, w, lambda i: i >= first)}
