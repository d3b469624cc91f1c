"""Architecture facts of a decoder-only transformer, read from a Hugging Face ``config.json``.

Every fact is an explicit field named as in ``config.json``; nothing is guessed from ratios.
For each supported ``model_type`` one builder lists the modules that transformers 5.x
instantiates (checked against ``sum(p.numel())`` of the real model in the tests):
the Linear layers per decoder layer (name, in/out features, bias, and whether bitsandbytes
would quantize it), the norms, embeddings and any non-Linear parameters (MoE experts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from .errors import EstimateError

# Largest dimension we accept in a config; anything above is a typo or an attack.
MAX_DIM = 2**24
MAX_LAYERS = 4096
# A model above this many parameters (1e14) is not a real model; refuse it.
MAX_TOTAL_PARAMS = 10**14
FP32_BYTES = 4


@dataclass(frozen=True)
class LinearSpec:
    """One Linear (or GPT-2 ``Conv1D``) module, as peft and bitsandbytes see it.

    ``name`` is the last component of the module path: the key peft's ``target_modules``
    matches. ``quantizable`` is True when ``type(module) is nn.Linear`` or ``Conv1D``:
    transformers' ``replace_with_bnb_linear`` swaps only those (subclasses such as
    ``FalconLinear`` stay in the compute dtype).
    """

    name: str
    in_features: int
    out_features: int
    bias: bool
    quantizable: bool = True
    role: str = "other"  # q, k, v, qkv, o, mlp_in, mlp_out, proj

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features

    @property
    def bias_params(self) -> int:
        return self.out_features if self.bias else 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params


@dataclass(frozen=True)
class ParamTarget:
    """A bare ``nn.Parameter`` of ``experts`` stacked ``out x in`` matrices (transformers 5 MoE).

    Not an ``nn.Linear``: bitsandbytes leaves it unquantized. peft 0.21 still adapts it when a
    config names the transformers-4 Linear it replaced (``legacy_names``; ``"all-linear"`` names
    them all): ``convert_peft_config_for_transformers`` moves it to ``target_parameters`` and
    ``lora.ParamWrapper`` wraps it with ``lora_A (r'·E, in)``, ``lora_B (out, r'·E)``, where
    ``r' = r · len(legacy_names)`` because fused matrices get ``rank_pattern`` ``r·2``.
    """

    name: str  # parameter name in transformers 5, e.g. "gate_up_proj" or the router's "gate.weight"
    legacy_names: tuple[str, ...]  # transformers 4 module names peft maps onto it, e.g. ("w1", "w3")
    experts: int  # stacked matrices (1: the router's 2-D weight)
    in_features: int
    out_features: int  # per stacked matrix
    role: str  # router | expert_in | expert_out

    @property
    def rank_factor(self) -> int:
        return len(self.legacy_names)

    @property
    def weight_params(self) -> int:
        return self.experts * self.in_features * self.out_features


@dataclass(frozen=True)
class NormSpec:
    """A normalization layer: RMSNorm (weight only) or LayerNorm (weight, optional bias)."""

    kind: str  # "rmsnorm" | "layernorm"
    size: int
    bias: bool = False
    affine: bool = True

    @property
    def params(self) -> int:
        if not self.affine:
            return 0
        return self.size * (2 if self.bias else 1)


@dataclass(frozen=True)
class ArchSpec:
    """A decoder-only transformer, with field names from Hugging Face ``config.json``."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    gated_mlp: bool
    hidden_act: str
    layer_linears: tuple[LinearSpec, ...]
    layer_norms: tuple[NormSpec, ...]
    final_norm: NormSpec | None
    # Linears outside the decoder layers other than lm_head (OPT's project_in/out).
    model_linears: tuple[LinearSpec, ...] = ()
    position_embeddings: int = 0  # rows of a learned position table (GPT-2, OPT)
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    # Non-Linear parameters per layer: fused MoE expert tensors and the router.
    layer_expert_params: int = 0
    layer_router_params: int = 0
    # Those non-Linear parameters that peft can still adapt (ParamWrapper), per layer.
    layer_param_targets: tuple[ParamTarget, ...] = ()
    parallel_residual: bool = False
    lm_head_bias: bool = False
    # Buffers (not parameters): the rotary embedding keeps ``inv_freq`` and ``original_inv_freq``
    # in fp32, ``ceil(rotary_dim / 2)`` entries each; Gemma keeps ``embed_scale``, a scalar in the
    # model dtype.
    rotary_dim: int = 0
    embed_scale_buffer: bool = False
    # Whether transformers offers torch's scaled_dot_product_attention for this family (Gemma 2's
    # logit soft-capping needs eager or flash attention in transformers 5).
    supports_sdpa: bool = True
    # Dropout on the attention probabilities in training (GPT-2's attn_pdrop defaults to 0.1).
    attention_dropout: float = 0.0
    # Sliding-window attention (0: none). transformers then builds a real causal mask for sdpa once
    # the sequence reaches the window, instead of passing ``is_causal`` (masking_utils,
    # ``_ignore_causal_mask_sdpa``: ``kv_length >= local_attention_size``).
    sliding_window: int = 0
    # How transformers' attention code lays tensors out (a fact of each family's modeling code):
    # - ``v_views_fused_qkv``: v is a view of the fused qkv projection's output while q and k leave
    #   it through RoPE as new tensors (Phi-3), so saving v keeps the whole output alive;
    # - ``attention_output_copied``: q reaches attention laid out (b, heads, s, d) (Phi-3's RoPE
    #   concatenates), the flash kernels' output follows q's layout, and the reshape before the
    #   output projection copies it (CUDA's memory-efficient kernel always lays its output out
    #   (b, s, heads, d)). Checked against simulations for Phi-3 only; GPT-NeoX and Falcon share
    #   parts of this and are not modelled yet.
    v_views_fused_qkv: bool = False
    attention_output_copied: bool = False
    # Whether eager attention computes its softmax in fp32 (Llama and most since) or in the
    # stream's dtype (GPT-2).
    softmax_fp32: bool = True
    # Dropout on the attention and MLP outputs (GPT-2's resid_pdrop defaults to 0.1).
    hidden_dropout: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:
        # Every estimate looks itself up in caches keyed by the architecture: hash it once.
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))

    # ---- derived counts -------------------------------------------------------------
    def buffer_bytes(self, dtype_bits: int) -> float:
        """Bytes of the model's buffers when loaded in a ``dtype_bits`` dtype."""
        inv_freq = 2 * ((self.rotary_dim + 1) // 2) * FP32_BYTES
        return inv_freq + (dtype_bits / 8 if self.embed_scale_buffer else 0)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        """Token embedding table plus a learned position table, if any."""
        return self.vocab_size * self.hidden_size + self.position_embeddings * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Parameters of the output head that are not shared with the embedding."""
        if self.tie_word_embeddings:
            return 0
        return self.vocab_size * self.hidden_size + (self.vocab_size if self.lm_head_bias else 0)

    @property
    def layer_linear_params(self) -> int:
        return sum(m.params for m in self.layer_linears)

    @property
    def layer_norm_params(self) -> int:
        return sum(n.params for n in self.layer_norms)

    @cached_property  # frozen: computed once, read by every estimate
    def layer_params(self) -> int:
        return (
            self.layer_linear_params
            + self.layer_norm_params
            + self.layer_expert_params
            + self.layer_router_params
        )

    @cached_property  # frozen: computed once, read by every estimate
    def total_params(self) -> int:
        """``sum(p.numel() for p in model.parameters())`` of the CausalLM model (tied counted once)."""
        return (
            self.embedding_params
            + self.num_hidden_layers * self.layer_params
            + sum(m.params for m in self.model_linears)
            + (self.final_norm.params if self.final_norm else 0)
            + self.lm_head_params
        )

    @property
    def linear_names(self) -> tuple[str, ...]:
        """Module names peft can target in this architecture (``lm_head`` excluded), including the
        transformers-4 names peft maps onto stacked parameters."""
        names = [m.name for m in self.layer_linears] + [m.name for m in self.model_linears]
        names += [n for p in self.layer_param_targets for n in p.legacy_names]
        return tuple(dict.fromkeys(names))

    def param_targets_named(self, names: tuple[str, ...]) -> list[tuple[ParamTarget, int]]:
        """(stacked parameter, how many in the model) for every one whose legacy names are all in
        ``names``; naming only some of a fused group is an error in peft, and here."""
        chosen = []
        for p in self.layer_param_targets:
            named = [n for n in p.legacy_names if n in names]
            if named and len(named) < len(p.legacy_names):
                missing = sorted(set(p.legacy_names) - set(named))
                raise EstimateError("lora.target_modules",
                                    f"{named} are fused into {p.name}: also target {missing}")
            if named:
                chosen.append((p, self.num_hidden_layers))
        return chosen

    def linears_named(self, names: tuple[str, ...]) -> list[tuple[LinearSpec, int]]:
        """(module, how many in the model) for every Linear whose name is in ``names``."""
        layer = [(m, self.num_hidden_layers) for m in self.layer_linears if m.name in names]
        top = [(m, 1) for m in self.model_linears if m.name in names]
        return layer + top

    def all_linears(self) -> list[tuple[LinearSpec, int]]:
        """Every Linear but ``lm_head`` with its multiplicity (peft's ``all-linear``)."""
        return self.linears_named(self.linear_names)


# ---- config reading -----------------------------------------------------------------


class _Config:
    """Typed, validated access to a config dict; errors name the field."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw

    def int(self, key: str, default: int | None = None, *, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        value = self.raw.get(key)
        if value is None:
            if default is None:
                raise EstimateError(f"config.{key}", "is required for this model_type")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise EstimateError(f"config.{key}", f"must be an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise EstimateError(f"config.{key}", f"must be between {minimum} and {maximum}, got {value}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise EstimateError(f"config.{key}", f"must be true or false, got {value!r}")
        return value

    def fraction(self, key: str) -> float | None:
        """A number in (0, 1] (e.g. ``partial_rotary_factor``), or None when absent."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise EstimateError(f"config.{key}", f"must be a number in (0, 1], got {value!r}")
        return float(value)

    def probability(self, key: str, default: float) -> float:
        """A dropout probability in [0, 1)."""
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise EstimateError(f"config.{key}", f"must be a number in [0, 1), got {value!r}")
        return float(value)

    def str(self, key: str, default: str) -> str:
        value = self.raw.get(key)
        return default if value is None else str(value)


def _rotary_dim(c: _Config, head_dim: int, default_factor: float = 1.0) -> int:
    """Dimensions of each head that RoPE rotates: ``head_dim · partial_rotary_factor``
    (``rotary_pct`` in GPT-NeoX configs; transformers 5 may nest it in ``rope_parameters``)."""
    nested = c.raw.get("rope_parameters")
    factor = _Config(nested).fraction("partial_rotary_factor") if isinstance(nested, Mapping) else None
    for key in ("partial_rotary_factor", "rotary_pct"):
        factor = factor or c.fraction(key)
    return int(head_dim * (factor or default_factor))


def _head_dim(c: _Config, hidden: int, heads: int) -> int:
    """``head_dim`` from the config when given, else ``hidden_size // num_attention_heads``."""
    if c.raw.get("head_dim") is not None:
        return c.int("head_dim")
    if hidden % heads:
        raise EstimateError("config.num_attention_heads", f"must divide hidden_size ({hidden})")
    return hidden // heads


def _kv_heads(c: _Config, heads: int) -> int:
    kv = c.int("num_key_value_heads", heads)
    if heads % kv:
        raise EstimateError("config.num_key_value_heads", f"must divide num_attention_heads ({heads})")
    return kv


# ---- family builders ----------------------------------------------------------------


# Families whose transformers model switches to a sliding-window causal mask when the config sets
# ``sliding_window`` (Qwen2 only with ``use_sliding_window``, and then per layer: not modelled).
SLIDING_WINDOW_TYPES = ("mistral", "mixtral", "phi3")


def _sliding_window(c: _Config, model_type: str) -> int:
    if model_type not in SLIDING_WINDOW_TYPES or c.raw.get("sliding_window") is None:
        return 0
    return c.int("sliding_window", maximum=2**27)


def _llama_like(c: _Config, model_type: str) -> ArchSpec:
    """llama, mistral, mixtral, qwen2, gemma, gemma2: RMSNorm, RoPE, gated MLP, GQA."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    kv = _kv_heads(c, heads)
    d = _head_dim(c, h, heads)
    inter = c.int("intermediate_size")
    qkv_bias = model_type == "qwen2" or c.bool("attention_bias", False)
    o_bias = c.bool("attention_bias", False) and model_type != "qwen2"
    mlp_bias = c.bool("mlp_bias", False)
    attn = (
        LinearSpec("q_proj", h, heads * d, qkv_bias, role="q"),
        LinearSpec("k_proj", h, kv * d, qkv_bias, role="k"),
        LinearSpec("v_proj", h, kv * d, qkv_bias, role="v"),
        LinearSpec("o_proj", heads * d, h, o_bias, role="o"),
    )
    experts = 0
    router = 0
    n_experts = 0
    param_targets: tuple[ParamTarget, ...] = ()
    if model_type == "mixtral":
        # transformers 5 fuses the experts into two 3-D parameters (not nn.Linear): gate_up_proj
        # (E, 2I, H) and down_proj (E, H, I); the router is a bare weight (E, H).
        n_experts = c.int("num_local_experts")
        experts = n_experts * 3 * h * inter
        router = n_experts * h
        mlp: tuple[LinearSpec, ...] = ()
        param_targets = (
            ParamTarget("gate.weight", ("gate",), 1, h, n_experts, "router"),
            ParamTarget("gate_up_proj", ("w1", "w3"), n_experts, h, 2 * inter, "expert_in"),
            ParamTarget("down_proj", ("w2",), n_experts, inter, h, "expert_out"),
        )
    else:
        mlp = (
            LinearSpec("gate_proj", h, inter, mlp_bias, role="mlp_in"),
            LinearSpec("up_proj", h, inter, mlp_bias, role="mlp_in"),
            LinearSpec("down_proj", inter, h, mlp_bias, role="mlp_out"),
        )
    norms_per_layer = 4 if model_type == "gemma2" else 2
    act_key = "hidden_activation" if model_type == "gemma2" else "hidden_act"
    return ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=d,
        intermediate_size=inter,
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", model_type in ("gemma", "gemma2")),
        max_position_embeddings=c.int("max_position_embeddings", 4096, maximum=2**27),
        gated_mlp=True,
        hidden_act=c.str(act_key, c.str("hidden_act", "silu")),
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=_sliding_window(c, model_type),
        layer_linears=attn + mlp,
        layer_norms=(NormSpec("rmsnorm", h),) * norms_per_layer,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=n_experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 2) if n_experts else 0,
        layer_expert_params=experts,
        layer_router_params=router,
        layer_param_targets=param_targets,
        rotary_dim=_rotary_dim(c, d),
        embed_scale_buffer=model_type in ("gemma", "gemma2"),
        supports_sdpa=model_type != "gemma2",
    )


def _phi3(c: _Config, model_type: str) -> ArchSpec:
    """phi3: fused ``qkv_proj`` and ``gate_up_proj``, RMSNorm, no biases."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    kv = _kv_heads(c, heads)
    d = _head_dim(c, h, heads)
    inter = c.int("intermediate_size")
    return ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=d,
        intermediate_size=inter,
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        max_position_embeddings=c.int("max_position_embeddings", 4096, maximum=2**27),
        gated_mlp=True,
        hidden_act=c.str("hidden_act", "silu"),
        sliding_window=_sliding_window(c, model_type),
        v_views_fused_qkv=True,
        attention_output_copied=True,
        layer_linears=(
            LinearSpec("qkv_proj", h, (heads + 2 * kv) * d, False, role="qkv"),
            LinearSpec("o_proj", heads * d, h, False, role="o"),
            LinearSpec("gate_up_proj", h, 2 * inter, False, role="mlp_in"),
            LinearSpec("down_proj", inter, h, False, role="mlp_out"),
        ),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        rotary_dim=_rotary_dim(c, d),
    )


def _gpt2(c: _Config, model_type: str) -> ArchSpec:
    """gpt2: ``Conv1D`` layers with biases, LayerNorm, learned positions, tied head."""
    h = c.int("n_embd", c.raw.get("hidden_size"))
    heads = c.int("n_head", c.raw.get("num_attention_heads"))
    inter = c.int("n_inner", 4 * h)
    return ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("n_layer", c.raw.get("num_hidden_layers"), maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_head_dim(_Config({}), h, heads),
        intermediate_size=inter,
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", True),
        max_position_embeddings=c.int("n_positions", 1024, maximum=2**27),
        gated_mlp=False,
        hidden_act=c.str("activation_function", "gelu_new"),
        attention_dropout=c.probability("attn_pdrop", 0.1),
        softmax_fp32=False,
        hidden_dropout=c.probability("resid_pdrop", 0.1),
        layer_linears=(
            LinearSpec("c_attn", h, 3 * h, True, role="qkv"),
            LinearSpec("c_proj", h, h, True, role="o"),
            LinearSpec("c_fc", h, inter, True, role="mlp_in"),
            LinearSpec("c_proj", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        position_embeddings=c.int("n_positions", 1024, maximum=2**27),
    )


def _opt(c: _Config, model_type: str) -> ArchSpec:
    """opt: biased Linears, LayerNorm, learned positions with an offset of 2."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    proj = c.int("word_embed_proj_dim", h)
    bias = c.bool("enable_bias", True)
    affine = c.bool("layer_norm_elementwise_affine", True)
    pre_norm = c.bool("do_layer_norm_before", True)
    max_pos = c.int("max_position_embeddings", 2048, maximum=2**27)
    model_linears: tuple[LinearSpec, ...] = ()
    if proj != h:
        model_linears = (
            LinearSpec("project_out", h, proj, False, role="proj"),
            LinearSpec("project_in", proj, h, False, role="proj"),
        )
    final = NormSpec("layernorm", h, bias=True, affine=affine)
    keep_final = pre_norm and not c.bool("_remove_final_layer_norm", False)
    spec = ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_head_dim(_Config({}), h, heads),
        intermediate_size=c.int("ffn_dim"),
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", True),
        max_position_embeddings=max_pos,
        gated_mlp=False,
        hidden_act=c.str("activation_function", "relu"),
        layer_linears=(
            LinearSpec("q_proj", h, h, bias, role="q"),
            LinearSpec("k_proj", h, h, bias, role="k"),
            LinearSpec("v_proj", h, h, bias, role="v"),
            LinearSpec("out_proj", h, h, bias, role="o"),
            LinearSpec("fc1", h, c.int("ffn_dim"), bias, role="mlp_in"),
            LinearSpec("fc2", c.int("ffn_dim"), h, bias, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True, affine=affine),) * 2,
        final_norm=final if keep_final else None,
        model_linears=model_linears,
        position_embeddings=max_pos + 2,  # OPTLearnedPositionalEmbedding keeps 2 extra rows
    )
    # The token embedding has word_embed_proj_dim columns, not hidden_size.
    return _with_embedding_width(spec, proj)


def _with_embedding_width(spec: ArchSpec, width: int) -> ArchSpec:
    if width == spec.hidden_size:
        return spec
    return _OptProjected(**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, embed_width=width)


@dataclass(frozen=True)
class _OptProjected(ArchSpec):
    """OPT with ``word_embed_proj_dim != hidden_size`` (e.g. OPT-350m): narrower token table."""

    embed_width: int = 0

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.embed_width + self.position_embeddings * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.embed_width


def _gpt_neox(c: _Config, model_type: str) -> ArchSpec:
    """gpt_neox (Pythia): fused ``query_key_value``, LayerNorm, parallel residual."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    bias = c.bool("attention_bias", True)
    inter = c.int("intermediate_size")
    return ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=_head_dim(_Config({}), h, heads),
        intermediate_size=inter,
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", False),
        max_position_embeddings=c.int("max_position_embeddings", 2048, maximum=2**27),
        gated_mlp=False,
        hidden_act=c.str("hidden_act", "gelu"),
        layer_linears=(
            LinearSpec("query_key_value", h, 3 * h, bias, role="qkv"),
            LinearSpec("dense", h, h, bias, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, True, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=c.bool("use_parallel_residual", True),
        rotary_dim=_rotary_dim(c, _head_dim(_Config({}), h, heads), default_factor=0.25),
    )


def _falcon(c: _Config, model_type: str) -> ArchSpec:
    """falcon: ``FalconLinear`` (an nn.Linear subclass bitsandbytes leaves unquantized), MQA/GQA."""
    h = c.int("hidden_size")
    heads = c.int("num_attention_heads")
    d = _head_dim(_Config({}), h, heads)
    new_arch = c.bool("new_decoder_architecture", False)
    multi_query = c.bool("multi_query", True)
    if new_arch:
        kv = c.int("num_kv_heads", heads)
    elif multi_query:
        kv = 1
    else:
        kv = heads
    qkv_out = (heads + 2 * kv) * d
    bias = c.bool("bias", False)
    inter = c.int("ffn_hidden_size", 4 * h)
    parallel = c.bool("parallel_attn", True)
    n_ln = c.raw.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 if (not parallel or n_ln == 2) else 1
    return ArchSpec(
        model_type=model_type,
        hidden_size=h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=d,
        intermediate_size=inter,
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", True),
        max_position_embeddings=c.int("max_position_embeddings", 2048, maximum=2**27),
        gated_mlp=False,
        hidden_act=c.str("activation", "gelu"),
        layer_linears=(
            LinearSpec("query_key_value", h, qkv_out, bias, quantizable=False, role="qkv"),
            LinearSpec("dense", h, h, bias, quantizable=False, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, bias, quantizable=False, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, bias, quantizable=False, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * norms,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=parallel,
        rotary_dim=0 if c.bool("alibi", False) else d,
    )


FAMILIES: dict[str, Callable[[_Config, str], ArchSpec]] = {
    "llama": _llama_like,
    "mistral": _llama_like,
    "mixtral": _llama_like,
    "qwen2": _llama_like,
    "gemma": _llama_like,
    "gemma2": _llama_like,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "opt": _opt,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
}


def arch_from_config(config: Mapping[str, Any]) -> ArchSpec:
    """Build an :class:`ArchSpec` from a Hugging Face ``config.json`` dict.

    Raises :class:`EstimateError` naming the field for a malformed or unsupported config.
    """
    if not isinstance(config, Mapping):
        raise EstimateError("config", "must be a JSON object (the model's config.json)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise EstimateError("config.model_type", "is required")
    builder = FAMILIES.get(model_type)
    if builder is None:
        raise EstimateError(
            "config.model_type", f"unsupported model_type {model_type!r}; supported: {sorted(FAMILIES)}"
        )
    spec = builder(_Config(config), model_type)
    if spec.total_params > MAX_TOTAL_PARAMS:
        raise EstimateError("config", f"describes {spec.total_params:.3g} parameters, above the limit of 1e14")
    return _attach_config(spec, config)


def _attach_config(spec: ArchSpec, config: Mapping[str, Any]) -> ArchSpec:
    values = {f: getattr(spec, f) for f in spec.__dataclass_fields__}
    values["config"] = dict(config)
    return type(spec)(**values)
