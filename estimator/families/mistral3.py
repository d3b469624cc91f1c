"""Mistral 3 (Mistral Small 3.x; transformers 5.23 ``models/mistral3/modeling_mistral3.py``:
``Mistral3ForConditionalGeneration``), a Mistral text model with a Pixtral tower.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..spec import ArchSpec
from .config import Config, ConfigClass, Family, sub_config
from .llama import LLAMA, MISTRAL, build_llama_like
from .towers import PIXTRAL_VISION, Tower, pixtral, tower_linear, tower_norms, wrap

# transformers 5.23's Mistral3Config: ``__init__`` defaults of the keys read here, its attribute_map,
# and the sub-configs its ``sub_configs_defaults`` builds when ``text_config`` or ``vision_config`` is
# null or absent (``init_kwargs``: Mistral Small 3.1's text model and Pixtral tower; a given dict is
# read with its own class's defaults instead).
MISTRAL3 = ConfigClass("Mistral3Config", dict(
    vision_config=None, text_config=None, vision_feature_layer=-1, multimodal_projector_bias=False,
    spatial_merge_size=2, tie_word_embeddings=True), attribute_map={"image_token_id": "image_token_index"})
MISTRAL3_TEXT = {"attention_dropout": 0.0, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
                 "intermediate_size": 32768, "max_position_embeddings": 131072, "model_type": "mistral",
                 "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 8,
                 "rope_theta": 1000000000.0, "sliding_window": None, "vocab_size": 131072}
MISTRAL3_VISION = {"intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14, "image_size": 1540,
                   "num_hidden_layers": 24, "num_attention_heads": 16, "head_dim": 64, "hidden_act": "gelu"}
# The text models modelled under mistral3 (its ``text_config`` may name any model_type), by class.
TEXT_CLASSES = {"mistral": MISTRAL, "llama": LLAMA}


def build_mistral3(c: Config, model_type: str) -> ArchSpec:
    """mistral3 (transformers ``Mistral3ForConditionalGeneration``, Mistral Small 3.x): a mistral
    text model under ``text_config``, a Pixtral tower and a projector (an RMSNorm, the patch
    merger's ``merging_layer (vision·m² -> vision)`` for ``spatial_merge_size`` m, ``linear_1``
    and ``linear_2``). Mistral3Config ties lm_head by default (``tie_word_embeddings``)."""
    given = c.get("text_config")
    text_type = str((given.get("model_type") if isinstance(given, Mapping) else None) or "mistral")
    if text_type not in TEXT_CLASSES:
        raise c.error("text_config.model_type", f"{text_type!r} under mistral3 is not modelled yet")
    text = build_llama_like(sub_config(c, "text_config", TEXT_CLASSES[text_type], absent=MISTRAL3_TEXT), text_type)
    vision = sub_config(c, "vision_config", PIXTRAL_VISION, absent=MISTRAL3_VISION)
    v_h, merge = vision.int("hidden_size"), c.int("spatial_merge_size")
    layers = c.get("vision_feature_layer")
    features = len(layers) if isinstance(layers, list) else 1
    bias = c.bool("multimodal_projector_bias")
    projector = Tower(((tower_linear("merging_layer", v_h * merge * merge, v_h, False), 1),
                       (tower_linear("linear_1", v_h * features, text.hidden_size, bias), 1),
                       (tower_linear("linear_2", text.hidden_size, text.hidden_size, bias), 1)),
                      tower_norms("rmsnorm", v_h, False, 1))
    return wrap(text, model_type, c.bool("tie_word_embeddings"), pixtral(vision) + projector)


FAMILIES = {"mistral3": Family(MISTRAL3, build_mistral3)}
