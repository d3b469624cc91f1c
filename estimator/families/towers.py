"""Multimodal wrappers' vision towers and projectors, as transformers 5.23 builds them
(``models/siglip/modeling_siglip.py``, ``models/pixtral/modeling_pixtral.py``): what a wrapper adds
to its text model, held but never run on a batch of text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..spec import ArchSpec, LinearSpec, NormSpec, ParamTensor
from ..units import FP32_BYTES
from .config import MAX_LAYERS, Config, ConfigClass, read_head_dim

# transformers 5.23's vision configuration classes: ``__init__`` defaults of the keys read here.
SIGLIP_VISION = ConfigClass("SiglipVisionConfig", dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
    image_size=224, patch_size=16, vision_use_head=True))
PIXTRAL_VISION = ConfigClass("PixtralVisionConfig", dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, num_channels=3,
    image_size=1024, patch_size=16))


@dataclass(frozen=True)
class Tower:
    """What a wrapper adds to its text model (:attr:`ArchSpec.tower_linears` and the rest)."""

    linears: tuple[tuple[LinearSpec, int], ...]
    tensors: tuple[ParamTensor, ...]
    buffer_bytes: int = 0

    def __add__(self, other: Tower) -> Tower:
        return Tower(self.linears + other.linears, self.tensors + other.tensors,
                     self.buffer_bytes + other.buffer_bytes)


def tower_linear(name: str, in_features: int, out_features: int, bias: bool, quantizable: bool = True) -> LinearSpec:
    return LinearSpec(name, in_features, out_features, bias, quantizable=quantizable, role="tower")


def tower_norms(kind: str, size: int, bias: bool, count: int) -> tuple[ParamTensor, ...]:
    return tuple(replace(t, role="tower", count=count) for t in NormSpec(kind, size, bias=bias).tensors())


def siglip(v: Config) -> Tower:
    """The SigLIP vision tower (transformers ``modeling_siglip.SiglipVisionTransformer``, with
    SiglipVisionConfig's defaults): a patch convolution with bias, learned positions (and their
    int64 ``position_ids`` buffer), ``num_hidden_layers`` layers of LayerNorm, q/k/v/out_proj and
    fc1/fc2 (biased Linears), a final LayerNorm; with ``vision_use_head``, an attention-pooling head
    (its ``out_proj`` is torch's NonDynamicallyQuantizableLinear, which bitsandbytes leaves alone)."""
    h, inter = v.int("hidden_size"), v.int("intermediate_size")
    layers = v.int("num_hidden_layers", maximum=MAX_LAYERS)
    patch, channels = v.int("patch_size"), v.int("num_channels")
    positions = (v.int("image_size") // patch) ** 2
    linears = tuple((tower_linear(n, h, h, True), layers) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    linears += ((tower_linear("fc1", h, inter, True), layers), (tower_linear("fc2", inter, h, True), layers))
    tensors = (ParamTensor("patch_embedding.weight", (h, channels, patch, patch), "tower"),
               ParamTensor("patch_embedding.bias", (h,), "tower"),
               ParamTensor("position_embedding.weight", (positions, h), "tower"),
               *tower_norms("layernorm", h, True, 2 * layers), *tower_norms("layernorm", h, True, 1))
    tower = Tower(linears, tensors, buffer_bytes=positions * 8)  # position_ids, int64
    if v.bool("vision_use_head"):
        head_linears = ((tower_linear("out_proj", h, h, True, quantizable=False), 1),
                        (tower_linear("fc1", h, inter, True), 1), (tower_linear("fc2", inter, h, True), 1))
        head_tensors = (ParamTensor("head.probe", (1, 1, h), "tower"),
                        ParamTensor("head.attention.in_proj_weight", (3 * h, h), "tower"),
                        ParamTensor("head.attention.in_proj_bias", (3 * h,), "tower"),
                        *tower_norms("layernorm", h, True, 1))
        tower = tower + Tower(head_linears, head_tensors)
    return tower


def pixtral(v: Config) -> Tower:
    """The Pixtral vision tower (transformers ``modeling_pixtral.PixtralTransformer``, with
    PixtralVisionConfig's defaults): a bias-free patch convolution, RMSNorms, q/k/v/o_proj and a
    gated gate/up/down_proj MLP without biases, and a 2-D rotary table (``head_dim / 2`` fp32
    frequencies, kept twice)."""
    h, inter = v.int("hidden_size"), v.int("intermediate_size")
    layers = v.int("num_hidden_layers", maximum=MAX_LAYERS)
    patch, channels = v.int("patch_size"), v.int("num_channels")
    head_dim = read_head_dim(v, h, v.int("num_attention_heads"))
    linears = tuple((tower_linear(n, h, h, False), layers) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    linears += tuple((m, layers) for m in (tower_linear("gate_proj", h, inter, False),
                                           tower_linear("up_proj", h, inter, False),
                                           tower_linear("down_proj", inter, h, False)))
    tensors = (ParamTensor("patch_conv.weight", (h, channels, patch, patch), "tower"),
               *tower_norms("rmsnorm", h, False, 1 + 2 * layers))
    return Tower(linears, tensors, buffer_bytes=2 * (head_dim // 2) * FP32_BYTES)


def wrap(text: ArchSpec, model_type: str, tie_word_embeddings: bool, tower: Tower) -> ArchSpec:
    """The text model's facts under the wrapper's ``model_type``, with its tower and projector."""
    return replace(text, model_type=model_type, tie_word_embeddings=tie_word_embeddings,
                   tower_linears=tower.linears, tower_tensors=tower.tensors, tower_buffer_bytes=tower.buffer_bytes)
