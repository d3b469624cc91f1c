"""The typed reader of ``config.json`` every family builder shares, reading a config as transformers
5.23 does (``configuration_utils.PreTrainedConfig`` and each ``models/<family>/configuration_<family>.py``):

- each family declares its configuration class as data (:class:`ConfigClass`): the class's
  ``attribute_map``, through which either spelling of a field is read (Qwen3-MoE's ``num_experts``
  and ``num_local_experts``, GPT-2's ``n_embd`` and ``hidden_size``), and its ``__init__`` defaults
  for what a config leaves out;
- a flag is read as the modeling code uses it, as a truth value: ``true``/``false`` or an integer;
- ``rope_parameters`` (or a legacy ``rope_scaling``) holds RoPE's parameters before the top level;
- keys the family does not read are ignored.

:class:`Config` checks every value it returns, and its errors name the field as config.json spells
it. One deliberate difference: a top-level config must give its sizes (:data:`SIZES`), where
transformers would build its class's default model; a nested ``text_config`` or ``vision_config``
takes the class's defaults for them too, as transformers does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Literal

from ..errors import EstimateError
from ..spec import ArchSpec

# Largest dimension we accept in a config; anything above is a typo or an attack.
MAX_DIM = 2**24
MAX_LAYERS = 4096
MAX_WINDOW = 2**27  # sliding windows, chunks and position counts

# The sizes a top-level config must give, as the builders ask for them (transformers' names, which
# the class's ``attribute_map`` resolves, and OPT's ``ffn_dim``; GPT-2's ``n_inner`` and Falcon's
# ``ffn_hidden_size`` are derived when null): without them a config describes no particular model.
SIZES = frozenset({"hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "intermediate_size",
                   "ffn_dim"})

_ABSENT = object()


@dataclass(frozen=True)
class ConfigClass:
    """A transformers configuration class as the estimator reads it: its ``name`` (the class in
    transformers 5.23's ``models/<family>/configuration_<family>.py``, the source of every value
    here; tests/estimator/test_config_semantics.py holds them equal), its ``attribute_map`` verbatim
    (alias -> the attribute it stands for), and its ``__init__`` ``defaults`` for the keys the
    family's builder reads (None where the class derives the value, as ``num_key_value_heads`` from
    the heads, or leaves the feature off, as a null ``sliding_window``). ``kwargs_defaults``: keys
    the class takes from ``**kwargs`` in ``__post_init__`` instead of as fields, with the value it
    gives an absent one (Gemma3TextConfig's ``sliding_window_pattern``). ``legacy_names``: old keys
    its ``__post_init__`` still reads for a field (FalconConfig's ``n_embed`` for ``hidden_size``),
    read as aliases."""

    name: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    attribute_map: Mapping[str, str] = field(default_factory=dict)
    kwargs_defaults: Mapping[str, Any] = field(default_factory=dict)
    legacy_names: Mapping[str, str] = field(default_factory=dict)

    @cached_property  # frozen: merged once, read on every key
    def _aliases(self) -> dict[str, str]:
        return {**self.attribute_map, **self.legacy_names}

    def spellings(self, key: str) -> tuple[str, ...]:
        """Every key config.json may give ``key``'s attribute under: its own name, then its aliases."""
        canonical = self._aliases.get(key, key)
        return (canonical, *(alias for alias, target in self._aliases.items() if target == canonical))

    def default(self, key: str) -> Any:
        """The class's value for an absent ``key`` (``_ABSENT`` when it declares none)."""
        canonical = self.spellings(key)[0]
        return self.defaults.get(canonical, self.kwargs_defaults.get(canonical, _ABSENT))


class Config:
    """Typed, validated access to a config dict read as ``config_class`` reads it; errors name the
    field at ``path`` (``config``, ``config.text_config``, ...) as config.json spells it.
    ``nested``: a sub-config, whose sizes default as the class has them (not required)."""

    def __init__(self, raw: Mapping[str, Any], config_class: ConfigClass, *, path: str = "config",
                 nested: bool = False):
        self.raw = raw
        self.config_class = config_class
        self.path = path
        self.nested = nested

    def error(self, key: str, message: str) -> EstimateError:
        return EstimateError(f"{self.path}.{key}", message)

    def given(self, key: str) -> tuple[str, Any] | None:
        """(the key as config.json spells it, its value, null included) for ``key`` or any alias of
        it; None when absent. Two spellings with different values are refused: transformers would
        keep whichever its class happens to set last."""
        found = [(k, self.raw[k]) for k in self.config_class.spellings(key) if k in self.raw]
        for k, value in found[1:]:
            if value != found[0][1]:
                raise self.error(k, f"names the same field of {self.config_class.name} as {found[0][0]}, "
                                    f"with another value: {value!r} vs {found[0][1]!r}")
        return found[0] if found else None

    def value(self, key: str, *, null: Any = _ABSENT) -> tuple[str, Any]:
        """(a name for errors, the value): as given, else the class's default. A null given takes the
        default too, unless ``null`` says what a null means (None: the feature off, or derived)."""
        given = self.given(key)
        if given is not None and given[1] is not None:
            return given
        if given is not None and null is not _ABSENT:
            return given[0], null
        canonical = self.config_class.spellings(key)[0]
        default = self.config_class.default(key)
        if default is not _ABSENT and not (key in SIZES and not self.nested):
            return canonical, default
        if null is not _ABSENT:  # neither given nor declared: the modeling code's own fallback
            return canonical, null
        raise self.error(canonical, "is required for this model_type")

    def get(self, key: str) -> Any:
        """The value as given (any JSON), else the class's default; None when neither."""
        return self.value(key, null=None)[1]

    def _checked_int(self, name: str, value: Any, minimum: int, maximum: int) -> int:
        """``value`` as an integer in ``[minimum, maximum]`` (a float with no fraction counts)."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.error(name, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def choices(self, key: str, allowed: tuple[Any, ...], length: int) -> tuple[Any, ...] | None:
        """A list of ``length`` values each one of ``allowed`` (``layer_types``), or None when absent."""
        name, value = self.value(key, null=None)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != length or any(
                isinstance(v, bool) or v not in allowed for v in value):
            raise self.error(name, f"must list one of {list(allowed)} for each of the {length} layers")
        return tuple(value)

    def layer_indices(self, key: str, layers: int) -> tuple[int, ...] | None:
        """A list of layer indices in ``[0, layers)`` (``mlp_only_layers``); None when absent or null."""
        name, value = self.value(key, null=None)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < layers
                                              for v in value):
            raise self.error(name, f"must list layer indices between 0 and {layers - 1}")
        return tuple(value)

    def optional_int(self, key: str, *, minimum: int = 1, maximum: int = MAX_DIM) -> int | None:
        """An integer, or None where the config (null) or the class's default (absent) leaves it
        off or to be derived (``sliding_window``, ``head_dim``, ``num_key_value_heads``, ...)."""
        name, value = self.value(key, null=None)
        return None if value is None else self._checked_int(name, value, minimum, maximum)

    def number(self, key: str) -> float | None:
        """A number (``attn_logit_softcapping``), or None where null or the class leaves it off."""
        name, value = self.value(key, null=None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self.error(name, f"must be a number, got {value!r}")
        return None if value is None else float(value)

    def fraction(self, key: str) -> float | None:
        """A number in (0, 1] (``partial_rotary_factor``), or None where neither given nor declared."""
        name, value = self.value(key, null=None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise self.error(name, f"must be a number in (0, 1], got {value!r}")
        return float(value)

    def probability(self, key: str) -> float:
        """A dropout probability in [0, 1)."""
        name, value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise self.error(name, f"must be a number in [0, 1), got {value!r}")
        return float(value)

    def int(self, key: str, *, minimum: int = 1, maximum: int = MAX_DIM) -> int:
        """An integer in ``[minimum, maximum]``; absent or null, the class's default."""
        name, value = self.value(key)
        if value is None:  # the class derives it: the builder should have asked optional_int
            raise self.error(name, "is required for this model_type")
        return self._checked_int(name, value, minimum, maximum)

    def bool(self, key: str) -> bool:
        """A flag, read as transformers 5.23's modeling code uses every flag the families read: as a
        truth value (``if config.use_qk_norm``, ``nn.Linear(..., bias=config.attention_bias)``; none
        is compared ``is True``), so an integer counts as its truthiness (Llama 4 Scout's published
        ``"attn_temperature_tuning": 4``)."""
        name, value = self.value(key)
        if not isinstance(value, int):  # bool is an int
            raise self.error(name, f"must be true or false (or an integer, read as its truth value), got {value!r}")
        return bool(value)

    def str(self, key: str) -> str:
        return str(self.value(key)[1])


def sub_config(c: Config, key: str, config_class: ConfigClass, absent: Mapping[str, Any] | None = None) -> Config:
    """The nested config under ``key`` (``text_config``, ``vision_config``), read as ``config_class``
    with every default the class has: transformers 5.23's ``SubConfigSpec.create_subconfig`` builds
    it from the dict, or from the wrapper's ``init_kwargs`` (``absent``) when it is null or absent."""
    value = c.get(key)
    if value is None and absent is not None:
        value = absent
    if not isinstance(value, Mapping):
        raise c.error(key, "is required for this model_type (an object)")
    return Config(value, config_class, path=f"{c.path}.{key}", nested=True)


# ---- RoPE and the heads ---------------------------------------------------------------


def read_rotary_dim(c: Config, head_dim: int, key: str = "partial_rotary_factor") -> int:
    """Dimensions of each head that RoPE rotates, ``int(head_dim · partial_rotary_factor)``, the
    factor as transformers 5.23 standardizes it (``modeling_rope_utils``,
    ``convert_rope_params_to_dict``): from the nested RoPE parameters (a legacy ``rope_scaling`` dict
    replacing ``rope_parameters`` when given), else the top-level ``key`` (GPT-NeoX's ``rotary_pct``)
    or the class's default for it, else 1."""
    nested = c.get("rope_scaling") or c.get("rope_parameters")
    factor = None
    if isinstance(nested, Mapping):
        rope = Config(nested, ConfigClass("rope_parameters"), path=f"{c.path}.rope_parameters", nested=True)
        factor = rope.fraction("partial_rotary_factor")
    return int(head_dim * (factor or c.fraction(key) or 1.0))


def read_head_dim(c: Config, hidden: int, heads: int) -> int:
    """``head_dim`` as given or the class's default, else ``hidden_size // num_attention_heads``
    (the modeling code's ``getattr(config, "head_dim", None) or hidden_size // num_attention_heads``)."""
    given = c.optional_int("head_dim")
    if given is not None:
        return given
    if hidden % heads:
        raise c.error("num_attention_heads", f"must divide hidden_size ({hidden})")
    return hidden // heads


def _kv_heads(c: Config, heads: int) -> int:
    """``num_key_value_heads`` as given or the class's default; None (most classes): one per head."""
    kv = c.optional_int("num_key_value_heads") or heads
    if heads % kv:
        raise c.error("num_key_value_heads", f"must divide num_attention_heads ({heads})")
    return kv


# ---- the fields every family shares -------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """The :class:`ArchSpec` fields every family has, as :func:`read_shared` reads them."""

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    num_hidden_layers: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    hidden_act: str

    def spec(self, model_type: str, **family: Any) -> ArchSpec:
        """The :class:`ArchSpec` of these fields and the family's own (``layer_linears``, ...; a family
        may restate a shared field, as GLM-4.5's sparse layers their shared experts' width)."""
        shared = {f.name: getattr(self, f.name) for f in fields(self)}
        return ArchSpec(model_type=model_type, **{**shared, **family})


# How a family's attention lays out its heads: "gqa", ``num_key_value_heads`` and ``head_dim`` as
# the config says; "mha", a k and a v head per query head, ``hidden_size / num_attention_heads``
# wide (GPT-2, OPT, GPT-NeoX, Falcon's classes have neither key); "latent", multi-head latent
# attention's q and k heads, ``qk_nope_head_dim + qk_rope_head_dim`` wide (DeepSeek-V3, Mistral 4).
Heads = Literal["gqa", "mha", "latent"]


def read_shared(c: Config, *, intermediate: str = "intermediate_size", act: str = "hidden_act",
                heads: Heads = "gqa", intermediate_factor: int | None = None) -> Shared:
    """The fields every family has, under transformers' names (aliases through the class's
    ``attribute_map``) and the class's defaults. ``intermediate``, ``act``: the keys the family's
    class keeps the MLP's width and activation under (GPT-2's ``n_inner``, OPT's ``ffn_dim``, ...);
    ``intermediate_factor``: the width is that many times ``hidden_size`` where the class's default
    (None) leaves it to be derived (GPT-2, Falcon); ``heads``: see :data:`Heads`."""
    h, n_heads = c.int("hidden_size"), c.int("num_attention_heads")
    width = c.optional_int(intermediate) if intermediate_factor else c.int(intermediate)
    kv, head_dim = _heads(c, h, n_heads, heads)
    return Shared(
        hidden_size=h,
        num_attention_heads=n_heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=width or (intermediate_factor or 0) * h,
        num_hidden_layers=c.int("num_hidden_layers", maximum=MAX_LAYERS),
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings"),
        max_position_embeddings=c.int("max_position_embeddings", maximum=MAX_WINDOW),
        hidden_act=c.str(act),
    )


def _heads(c: Config, hidden: int, heads: int, layout: Heads) -> tuple[int, int]:
    """(``num_key_value_heads``, ``head_dim``) as the family's attention lays its heads out."""
    if layout == "gqa":
        return _kv_heads(c, heads), read_head_dim(c, hidden, heads)
    if layout == "latent":
        return heads, c.int("qk_nope_head_dim") + c.int("qk_rope_head_dim")
    if hidden % heads:
        raise c.error("num_attention_heads", f"must divide hidden_size ({hidden})")
    return heads, hidden // heads


# ---- the registry's entries -----------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One ``model_type``: the configuration class its config.json is read as, and its builder."""

    config_class: ConfigClass
    build: Callable[[Config, str], ArchSpec]
