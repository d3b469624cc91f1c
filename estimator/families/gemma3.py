"""Gemma 3: the text model and the multimodal wrapper (transformers 5.23
``models/gemma3/modeling_gemma3.py``: ``Gemma3ForCausalLM``, ``Gemma3ForConditionalGeneration``).
"""

from __future__ import annotations

from ..spec import ArchSpec, NormSpec, ParamTensor
from .config import Config, ConfigClass, Family, read_rotary_dim, read_shared, sub_config
from .layers import attention_linears, gated_mlp_linears, qk_norms, read_layer_types, window
from .towers import SIGLIP_VISION, Tower, siglip, tower_norms, wrap

# transformers 5.23's configuration classes: ``__init__`` defaults of the keys read here.
# Gemma3TextConfig.__post_init__ takes ``sliding_window_pattern`` from its keywords (6 when absent).
GEMMA3_TEXT = ConfigClass("Gemma3TextConfig", dict(
    vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131072,
    tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0, sliding_window=4096, layer_types=None,
    attn_logit_softcapping=None), kwargs_defaults={"sliding_window_pattern": 6})
GEMMA3 = ConfigClass("Gemma3Config", dict(text_config=None, vision_config=None, tie_word_embeddings=True),
                     attribute_map={"image_token_id": "image_token_index", "boi_token_id": "boi_token_index",
                                    "eoi_token_id": "eoi_token_index"})


def build_gemma3_text(c: Config, model_type: str) -> ArchSpec:
    """gemma3_text (transformers ``modeling_gemma3``): Gemma 2's four norms per layer with
    ``q_norm``/``k_norm`` per head, all ``(1 + w)`` in fp32; sliding-window layers (``layer_types``,
    else five of every ``sliding_window_pattern`` = 6) and a rotary table for each layer type; the
    token embedding scaled by ``sqrt(hidden_size)`` (a buffer); no logit soft-capping by default, so
    sdpa runs."""
    s = read_shared(c, act="hidden_activation")
    h, L = s.hidden_size, s.num_hidden_layers
    bias = c.bool("attention_bias")
    pattern = c.int("sliding_window_pattern")
    w = window(c)
    layer_types = read_layer_types(c, L, w, lambda i: bool((i + 1) % pattern))
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout"),
        sliding_window=w,
        layer_types=layer_types,
        rotary_tables=len(set(layer_types)),
        layer_linears=attention_linears(s, bias, bias) + gated_mlp_linears(h, s.intermediate_size, False),
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True, unit_offset=True),) * 4,
        qk_norms=qk_norms(s, per_head=True, gemma=True),
        qk_norm_per_head=True,
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True, unit_offset=True),
        rotary_dim=read_rotary_dim(c, s.head_dim),
        embed_scale_buffer=True,
        supports_sdpa=c.number("attn_logit_softcapping") is None,
    )


def build_gemma3(c: Config, model_type: str) -> ArchSpec:
    """gemma3 (transformers ``Gemma3ForConditionalGeneration``): a gemma3_text model under
    ``text_config`` (Gemma3TextConfig's defaults for what it leaves out), a SigLIP tower under
    ``vision_config`` and a projector: the bare ``mm_input_projection_weight (vision, text)`` and
    a Gemma RMSNorm. lm_head is tied to the token embedding unless the wrapper says otherwise."""
    text = build_gemma3_text(sub_config(c, "text_config", GEMMA3_TEXT, absent={}), "gemma3_text")
    vision = sub_config(c, "vision_config", SIGLIP_VISION, absent={})
    v_h = vision.int("hidden_size")
    projector = Tower((), (ParamTensor("mm_input_projection_weight", (v_h, text.hidden_size), "tower"),
                           *tower_norms("rmsnorm", v_h, False, 1)))
    return wrap(text, model_type, c.bool("tie_word_embeddings"), siglip(vision) + projector)


FAMILIES = {"gemma3_text": Family(GEMMA3_TEXT, build_gemma3_text), "gemma3": Family(GEMMA3, build_gemma3)}
