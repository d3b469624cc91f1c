"""Architecture facts of a decoder-only transformer, read from a Hugging Face ``config.json``.

Every fact is an explicit field named as in ``config.json``; nothing is guessed from ratios.
For each supported ``model_type`` one builder lists the modules that transformers 5.x
instantiates: the Linear layers per decoder layer (name, in/out features, bias, and whether
bitsandbytes would quantize it), the norms, embeddings and any non-Linear parameters (MoE
experts). :meth:`ArchSpec.param_tensors` turns those facts into the one list of the model's
parameter tensors that every count derives from (checked tensor by tensor against
``model.named_parameters()`` of the real model in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from .errors import EstimateError
from .units import FP32_BYTES

# Largest dimension we accept in a config; anything above is a typo or an attack.
MAX_DIM = 2**24
MAX_LAYERS = 4096
# A model above this many parameters (1e14) is not a real model; refuse it.
MAX_TOTAL_PARAMS = 10**14


# Activations transformers writes as several pointwise ops in Python (NewGELUActivation's
# ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * pow(x, 3))))``), ``pow`` among them.
COMPOSITE_GELUS = ("gelu_new",)


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
    role: str = "other"  # q, k, v, qkv, o, mlp_in, mlp_out, proj_in, proj_out, router
    # Llama 4's router is an ``nn.Linear`` whose forward returns ``(scores, logits)``: a peft LoRA
    # layer around it adds its delta to that tuple and the forward fails.
    returns_tuple: bool = False

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features

    def tensors(self) -> tuple[ParamTensor, ...]:
        """``weight (out, in)`` and, if any, ``bias (out,)``."""
        weight = ParamTensor(f"{self.name}.weight", (self.out_features, self.in_features), "linear",
                             quantizable=self.quantizable)
        if not self.bias:
            return (weight,)
        return weight, ParamTensor(f"{self.name}.bias", (self.out_features,), "bias")


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
    # gpt-oss stores its experts ``(experts, in, out)`` and gives each matrix a bias ``(experts, out)``
    transposed: bool = False
    bias: bool = False

    @property
    def rank_factor(self) -> int:
        return len(self.legacy_names)

    @property
    def weight_params(self) -> int:
        return self.experts * self.in_features * self.out_features

    def tensors(self) -> tuple[ParamTensor, ...]:
        """``(experts, out, in)`` stacked (Mixtral's ``gate_up_proj``, ``down_proj``; gpt-oss's
        ``(experts, in, out)``), ``(out, in)`` for the router's weight; and the biases, if any."""
        matrix = (self.in_features, self.out_features) if self.transposed else (self.out_features, self.in_features)
        stacked = (self.experts,) if self.experts > 1 else ()
        weight = ParamTensor(self.name, (*stacked, *matrix), self.role)
        if not self.bias:
            return (weight,)
        return weight, ParamTensor(f"{self.name}_bias", (*stacked, self.out_features), self.role)


@dataclass(frozen=True)
class NormSpec:
    """A normalization layer: RMSNorm (weight only) or LayerNorm (weight, optional bias)."""

    kind: str  # "rmsnorm" | "layernorm"
    size: int
    bias: bool = False
    affine: bool = True  # LayerNorm's elementwise_affine: False keeps neither weight nor bias
    # Gemma's, OLMo 2's and gpt-oss's RMSNorm scale in fp32 and cast after (``(x * w).to(dtype)``);
    # Llama's casts first and scales in the stream's dtype (``w * x.to(dtype)``).
    fp32_scale: bool = False
    # Gemma's scales by ``1 + weight``, an fp32 tensor made on every call.
    unit_offset: bool = False

    def tensors(self) -> tuple[ParamTensor, ...]:
        """``weight (size,)`` and ``bias (size,)`` as the norm has them."""
        if not self.affine:
            return ()
        weight = ParamTensor(f"{self.kind}.weight", (self.size,), "norm")
        return (weight, ParamTensor(f"{self.kind}.bias", (self.size,), "norm")) if self.bias else (weight,)


@dataclass(frozen=True)
class MlaSpec:
    """Multi-head latent attention (DeepSeek-V2/V3, transformers ``DeepseekV3Attention``): q through
    a ``q_lora_rank`` latent (or a plain ``q_proj`` when it is null), k and v through one shared
    ``kv_lora_rank`` latent plus a ``qk_rope_head_dim`` rotated key shared by every head; each head's
    q and k are ``qk_nope_head_dim + qk_rope_head_dim`` wide, its v ``v_head_dim``. Field names as in
    config.json."""

    q_lora_rank: int  # 0: no q latent
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class ParamTensor:
    """One parameter tensor as ``model.named_parameters()`` yields it (a tied one once), with how
    many the model holds (``num_hidden_layers`` for a tensor of every decoder layer).

    ``shape`` is torch's, a Linear weight ``(out_features, in_features)`` as ``nn.Linear`` stores
    it; GPT-2's ``Conv1D`` stores the transpose of that (the same elements).
    """

    name: str  # last module name and parameter, e.g. "q_proj.weight"
    shape: tuple[int, ...]
    role: str  # embedding | position | linear | bias | norm | router | expert_in | expert_out | lm_head
    count: int = 1
    quantizable: bool = False  # a weight bitsandbytes replaces (see LinearSpec.quantizable)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def params(self) -> int:
        """``numel · count``: this tensor's parameters over the whole model."""
        return self.numel * self.count


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
    # OPT: columns of the token embedding and of lm_head's input when they differ from hidden_size
    # (OPT-350m: 512 vs 1024); the model then adds project_in and project_out. 0: hidden_size.
    word_embed_proj_dim: int = 0
    position_embeddings: int = 0  # rows of a learned position table (GPT-2, OPT)
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    # Width of each routed expert's MLP where it is not ``intermediate_size`` (Qwen3 MoE's
    # ``moe_intermediate_size``); 0: ``intermediate_size`` (Mixtral).
    moe_intermediate_size: int = 0
    # How the router and experts compute (each changes what routing keeps for backward):
    # ``norm_topk_prob`` (config.json's; Mixtral always): the top-k weights renormalized to sum 1;
    # ``router``: "softmax" (over every expert's logit, in fp32: Mixtral, Qwen3 MoE), "top_k_softmax"
    # (gpt-oss: over the top-k logits only, in the stream's dtype), "grouped_sigmoid" (DeepSeek-V3,
    # GLM-4.5: fp32 sigmoid scores, experts chosen within the best ``topk_group`` of ``n_group``
    # groups), "grouped_softmax" (Mistral 4: the same choice over softmax scores in the stream's
    # dtype) or "top_k_sigmoid" (Llama 4); ``expert_gate``: "swiglu" (``act(gate) * up``) or
    # "clamped_swiglu" (gpt-oss's clamped, sigmoid-gated ``(up + 1) * glu``); ``shared_experts``:
    # the layer's gated MLP Linears (width ``intermediate_size``) run on every token beside the
    # routed experts (DeepSeek-V3, GLM-4.5, Mistral 4, Llama 4).
    norm_topk_prob: bool = False
    routing_weights_fp32: bool = False  # Mixtral hands the experts its fp32 top-k weights uncast
    router: str = "softmax"
    n_group: int = 1
    topk_group: int = 1
    shared_experts: bool = False
    expert_gate: str = "swiglu"
    # Non-Linear parameters per layer that peft can still adapt (ParamWrapper): MoE experts, router.
    layer_param_targets: tuple[ParamTarget, ...] = ()
    parallel_residual: bool = False
    lm_head_bias: bool = False
    # Buffers (not parameters): the rotary embedding keeps ``inv_freq`` and ``original_inv_freq``
    # in fp32, ``ceil(rotary_dim / 2)`` entries each; Gemma keeps ``embed_scale``, a scalar in the
    # model dtype.
    rotary_dim: int = 0
    rotary_tables: int = 1  # rotary tables kept (Gemma 3: one per layer type, each its own base)
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
    # Dropout on the attention and MLP outputs (GPT-2's resid_pdrop, OPT's dropout: 0.1 by
    # default) and on the embeddings (GPT-2's embd_pdrop).
    hidden_dropout: float = 0.0
    embedding_dropout: float = 0.0
    # q/k normalization inside attention (``q_norm``, ``k_norm``): RMSNorm over each head's vector
    # (Qwen3, Gemma 3: ``RMSNorm(head_dim)``, ``qk_norm_per_head``) or over the whole projection
    # (OLMo 2: ``RMSNorm(num_heads * head_dim)``). Empty: none.
    qk_norms: tuple[NormSpec, ...] = ()
    qk_norm_per_head: bool = False
    # config.json's ``layer_types``, one per layer: "full_attention" or "sliding_attention" (the
    # layer attends within ``sliding_window``). Empty: every layer alike, sliding when
    # ``sliding_window`` is set (Mistral, Phi-3).
    layer_types: tuple[str, ...] = ()
    # The router's ``e_score_correction_bias`` buffer of every sparse layer (GLM-4.5, DeepSeek-V3):
    # its entries, and whether it stays fp32 (GLM-4.5's ``_keep_in_fp32_modules_strict``) or takes
    # the model's dtype (DeepSeek-V3's).
    router_bias_buffer: int = 0
    router_bias_fp32: bool = False
    # Other parameters of every layer (gpt-oss's attention ``sinks``, one logit per head).
    layer_tensors: tuple[ParamTensor, ...] = ()
    # gpt-oss: a learned sink logit per head joins every row of attention scores before softmax.
    attention_sinks: bool = False
    # OLMo 2: the layer norms the attention and MLP outputs (``post_attention_layernorm``,
    # ``post_feedforward_layernorm``) and reads its input unnormalized.
    post_norm: bool = False
    # Granite: the attention and MLP outputs are scaled (``residual_multiplier``) before each add.
    residual_scaled: bool = False
    # A multimodal wrapper's modules outside the text model (Gemma 3's SigLIP tower and projector,
    # Mistral 3's Pixtral tower and projector): Linears with how many the model holds, the other
    # parameter tensors, and its buffers' bytes. A batch of text alone never runs them: their
    # weights (and any adapters on them) are held, but no gradient reaches them, and AdamW keeps
    # no state for a parameter whose ``.grad`` is None.
    tower_linears: tuple[tuple[LinearSpec, int], ...] = ()
    tower_tensors: tuple[ParamTensor, ...] = ()
    tower_buffer_bytes: int = 0
    # Multi-head latent attention (DeepSeek-V3); None: q/k/v projections as ``layer_linears`` say.
    mla: MlaSpec | None = None
    # Layers whose MLP is dense in a model whose other layers are sparse (DeepSeek-V3's and GLM-4.5's
    # first ``first_k_dense_replace``, Qwen3 MoE's ``mlp_only_layers``): their indices, and the
    # ArchSpec of one such layer (its own Linears, no experts); the fields above describe the others.
    dense_layer_indices: tuple[int, ...] = ()
    dense_layer: ArchSpec | None = None
    # Llama 4 (transformers ``modeling_llama4``), each a mechanism of its own:
    # - ``attention_chunk_size``: "chunked_attention" layers attend within chunks of this many
    #   tokens; for memory the mask is a sliding window's (materialized once the sequence reaches it);
    # - ``no_rope_layers`` (config.json's, one per layer, 1: the layer rotates q and k; empty: all do);
    # - ``rope_complex``: RoPE multiplies q and k, upcast to fp32, as complex numbers by a complex64
    #   table (``freqs_cis``) instead of adding cos/sin products;
    # - ``l2_qk_norm``: q and k L2-normalized over each head (an RMSNorm without weight, in fp32) on
    #   the layers that rotate (``use_qk_norm``);
    # - ``query_position_scale``: q is scaled by a factor per position: "nope_fp32" (Llama 4's
    #   ``attn_temperature_tuning``: on the layers that do not rotate, an fp32 factor) or "all"
    #   (Mistral 4's ``llama_4_scaling_beta``: every layer, the factor cast to q's dtype);
    # - ``expert_dispatch``: "grouped" (the routed rows go to their experts, transformers'
    #   grouped_mm) or "all" (Llama 4: every expert runs on every token, weighted by its
    #   ``router="top_k_sigmoid"`` score, which is 0 outside the top k);
    # - ``attention_output_held``: the decoder layer keeps attention's output in a local of its own
    #   (``attention_states``; GPT-2's ``attn_output``) until it returns, through the MLP.
    # - ``position_ids_per_row``: a learned position table is read with positions per row (OPT:
    #   from each row's attention mask), not one shared row (GPT-2's ``arange``).
    attention_chunk_size: int = 0
    no_rope_layers: tuple[int, ...] = ()
    rope_complex: bool = False
    l2_qk_norm: bool = False
    query_position_scale: str = ""
    expert_dispatch: str = "grouped"
    attention_output_held: bool = False
    position_ids_per_row: bool = False
    # Whether attention repeats k and v to every query head under GQA/MQA (``repeat_kv``, in the
    # attention functions transformers' families share); Falcon calls sdpa (or its matmuls) itself
    # with its own kv heads, broadcast.
    repeats_kv: bool = True
    # Whether the model materializes its causal mask for sdpa even where ``is_causal`` would do
    # (Falcon: ``create_causal_mask(..., allow_is_causal_skip=False)``, "so alibi can be added").
    mask_materialized: bool = False
    # Whether the decoder layer runs its MLP inline, rebinding ``hidden_states`` to ``fc1``'s output
    # (OPT): the norm's output is freed once ``fc1`` has read it.
    mlp_inline: bool = False
    # Gemma 2's soft-capping, ``tanh(x / c) * c``, of the attention scores and of the final logits
    # (``attn_logit_softcapping``, ``final_logit_softcapping``; 0: none).
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0
    # Whether the model makes the layers' input from the token embedding's output by a new tensor
    # outside the embedding module (Granite's ``inputs_embeds * embedding_multiplier``; GPT-2 and OPT
    # add their position embeddings to it).
    embeddings_rescaled: bool = False
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __hash__(self) -> int:
        # Every estimate looks itself up in caches keyed by the architecture: hash it once.
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))

    # ---- shapes ---------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @cached_property
    def layer_windows(self) -> tuple[int, ...]:
        """Each layer's attention window in tokens (0: full causal attention)."""
        if not self.layer_types:
            return (self.sliding_window,) * self.num_hidden_layers
        local = {"sliding_attention": self.sliding_window, "chunked_attention": self.attention_chunk_size}
        return tuple(local.get(t, 0) for t in self.layer_types)

    @cached_property
    def autocast_neutral_on_cuda(self) -> bool:
        """Whether CUDA's autocast leaves the stream's own ops as they are: every norm an RMSNorm
        (CUDA's autocast runs ``layer_norm`` in fp32, torch 2.13 ``autocast_mode.cpp``), the eager
        softmax pinned to fp32 (an unpinned ``softmax`` runs in fp32 there too), no ``gelu_new``
        (its ``pow``, fp32 there)."""
        norms = (*self.layer_norms, *((self.final_norm,) if self.final_norm else ()))
        return (all(n.kind == "rmsnorm" for n in norms) and self.softmax_fp32
                and self.hidden_act not in COMPOSITE_GELUS)

    @cached_property
    def smallest_window(self) -> int:
        """The narrowest window any layer attends within (0: every layer attends fully)."""
        return min((w for w in self.layer_windows if w), default=0)

    @cached_property
    def layer_rope(self) -> tuple[bool, ...]:
        """Whether each layer rotates q and k (``no_rope_layers``; every layer where it is empty)."""
        return tuple(bool(r) for r in self.no_rope_layers) or (True,) * self.num_hidden_layers

    def layer_arch(self, index: int) -> ArchSpec:
        """The ArchSpec that describes decoder layer ``index`` (the dense one or this one)."""
        return self.dense_layer if self.dense_layer is not None and index in self.dense_layer_indices else self

    @property
    def sparse_layers(self) -> int:
        """Layers this ArchSpec's own fields describe (all but ``dense_layer_indices``)."""
        return self.num_hidden_layers - len(self.dense_layer_indices)

    @cached_property
    def kind_counts(self) -> tuple[tuple[ArchSpec, int, bool, int], ...]:
        """(the layer's ArchSpec, its window, whether it rotates q and k, how many layers are so),
        in order of first appearance."""
        counts: dict[tuple[ArchSpec, int, bool], int] = {}
        for i, (w, rope) in enumerate(zip(self.layer_windows, self.layer_rope, strict=True)):
            key = (self.layer_arch(i), w, rope)
            counts[key] = counts.get(key, 0) + 1
        return tuple((a, w, rope, n) for (a, w, rope), n in counts.items())

    @property
    def attention_out_dim(self) -> int:
        """Width of attention's output, ``o_proj``'s input: ``heads · v_head_dim`` under MLA."""
        return self.num_attention_heads * self.mla.v_head_dim if self.mla else self.q_dim

    @property
    def expert_width(self) -> int:
        """Intermediate width of one routed expert (MoE), else of the MLP."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def embedding_dim(self) -> int:
        """Columns of the token embedding, and lm_head's ``in_features`` (its output, the logits,
        is ``vocab_size`` wide): ``word_embed_proj_dim`` where set, else ``hidden_size``."""
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def model_linears(self) -> tuple[LinearSpec, ...]:
        """Linears outside the decoder layers other than lm_head: OPT's ``project_out (h -> e)``
        after the layers and ``project_in (e -> h)`` after the token embedding, plain
        ``nn.Linear`` without bias, built when ``word_embed_proj_dim != hidden_size``
        (transformers ``modeling_opt.OPTDecoder.__init__``)."""
        h, e = self.hidden_size, self.embedding_dim
        if e == h:
            return ()
        return (LinearSpec("project_out", h, e, False, role="proj_out"),
                LinearSpec("project_in", e, h, False, role="proj_in"))

    # ---- the parameter tensors: every count below derives from these ------------------
    def layer_param_tensors(self) -> tuple[ParamTensor, ...]:
        """The parameter tensors of one decoder layer: Linears, norms, MoE experts and router."""
        return self._layer_param_tensors

    def param_tensors(self) -> tuple[ParamTensor, ...]:
        """Every parameter tensor of the CausalLM model, with how many of each it holds; a tied
        ``lm_head`` is the token embedding and is not listed again (``named_parameters()``)."""
        return self._param_tensors

    @cached_property  # frozen: listed once, read by every estimate
    def _layer_param_tensors(self) -> tuple[ParamTensor, ...]:
        linears = [t for m in self.layer_linears for t in m.tensors()]
        norms = [t for n in (*self.layer_norms, *self.qk_norms) for t in n.tensors()]
        targets = [t for p in self.layer_param_targets for t in p.tensors()]
        return (*linears, *targets, *norms, *self.layer_tensors)

    @cached_property
    def _param_tensors(self) -> tuple[ParamTensor, ...]:
        tensors = [ParamTensor("embed_tokens.weight", (self.vocab_size, self.embedding_dim), "embedding")]
        if self.position_embeddings:
            tensors.append(ParamTensor("embed_positions.weight", (self.position_embeddings, self.hidden_size),
                                       "position"))
        tensors += [t for m in self.model_linears for t in m.tensors()]
        tensors += [replace(t, count=self.sparse_layers) for t in self.layer_param_tensors() if self.sparse_layers]
        if self.dense_layer is not None:
            dense = len(self.dense_layer_indices)
            tensors += [replace(t, count=dense) for t in self.dense_layer.layer_param_tensors()]
        tensors += self.final_norm.tensors() if self.final_norm else ()
        tensors += [replace(t, role="tower", count=n) for m, n in self.tower_linears for t in m.tensors()]
        tensors += self.tower_tensors
        if not self.tie_word_embeddings:
            tensors.append(ParamTensor("lm_head.weight", (self.vocab_size, self.embedding_dim), "lm_head"))
            if self.lm_head_bias:
                tensors.append(ParamTensor("lm_head.bias", (self.vocab_size,), "lm_head"))
        return tuple(tensors)

    def params_of(self, *roles: str) -> int:
        """Parameters of the model's tensors with one of ``roles`` (``"embedding"``, ...)."""
        return sum(self._params_by_role.get(role, 0) for role in roles)

    @cached_property  # frozen: summed once, read by every new step plan
    def _params_by_role(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for t in self.param_tensors():
            totals[t.role] = totals.get(t.role, 0) + t.params
        return totals

    @cached_property
    def attention_params(self) -> int:
        """Parameters of one layer's attention side: its projections, q/k norms, other attention
        tensors (gpt-oss's sinks) and the norm before it; the rest of the layer (MLP, experts,
        router, the norm before the MLP) gets its gradients first in backward."""
        roles = ("q", "k", "v", "qkv", "o", "q_latent", "kv_latent")
        linears = sum(t.numel for m in self.layer_linears if m.role in roles for t in m.tensors())
        norms = (*self.layer_norms[:1], *self.qk_norms)
        return linears + sum(t.numel for n in norms for t in n.tensors()) + sum(t.numel for t in self.layer_tensors)

    @cached_property  # frozen: computed once, read by every estimate
    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        return sum(t.numel for t in self.layer_param_tensors())

    @cached_property
    def total_params(self) -> int:
        """``sum(p.numel() for p in model.parameters())`` of the CausalLM model (tied counted once)."""
        return sum(t.params for t in self.param_tensors())

    def buffer_bytes(self, dtype_bits: int) -> float:
        """Bytes of the model's buffers when loaded in a ``dtype_bits`` dtype."""
        inv_freq = self.rotary_tables * 2 * ((self.rotary_dim + 1) // 2) * FP32_BYTES
        bias_bits = 32 if self.router_bias_fp32 else dtype_bits
        layers = self.router_bias_buffer * bias_bits / 8 * self.sparse_layers
        return inv_freq + (dtype_bits / 8 if self.embed_scale_buffer else 0) + self.tower_buffer_bytes + layers

    # ---- what peft can target -------------------------------------------------------
    @property
    def linear_names(self) -> tuple[str, ...]:
        """Module names peft can target in this architecture (``lm_head`` excluded), including the
        transformers-4 names peft maps onto stacked parameters."""
        names = [m.name for m in self.layer_linears] + [m.name for m in self.model_linears]
        names += [n for p in self.layer_param_targets for n in p.legacy_names]
        names += [m.name for m, _ in self.tower_linears]
        names += self.dense_layer.linear_names if self.dense_layer is not None else ()
        return tuple(dict.fromkeys(names))

    @property
    def query_value_target(self) -> tuple[str, ...]:
        """The Linears that make the heads' queries and values, the LoRA paper's W_q and W_v (Hu et
        al., "LoRA", arXiv:2106.09685, section 7.1) in the family's names: q_proj and v_proj, a fused
        qkv projection, or under multi-head latent attention the up-projections from the latents
        (q_b_proj, kv_b_proj; q_a_proj only compresses)."""
        latent_q = any(m.role == "q_latent" for m in self.layer_linears)
        roles = ("v", "qkv", "q_latent", "kv_latent") + (() if latent_q else ("q",))
        return tuple(dict.fromkeys(m.name for m in self.layer_linears if m.role in roles))

    @property
    def every_linear_target(self) -> str | tuple[str, ...]:
        """``"all-linear"``, or where peft fails on it (a Linear returning a tuple, Llama 4's router)
        every other Linear by name: the targets that adapt every Linear peft can run."""
        broken = {m.name for m in self.layer_linears if m.returns_tuple}
        if not broken:
            return "all-linear"
        return tuple(n for n in self.linear_names if n not in broken)

    @property
    def peft_reaches_experts(self) -> bool:
        """Whether peft 0.21 maps LoRA targets onto the stacked MoE parameters (it has a conversion
        table for the family: Mixtral, Qwen3 MoE; not gpt-oss)."""
        return any(p.legacy_names for p in self.layer_param_targets)

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
                chosen.append((p, self.sparse_layers))
        return chosen

    def linears_named(self, names: tuple[str, ...]) -> list[tuple[LinearSpec, int]]:
        """(module, how many in the model) for every Linear whose name is in ``names``."""
        layer = [(m, self.sparse_layers) for m in self.layer_linears if m.name in names and self.sparse_layers]
        if self.dense_layer is not None:
            layer += [(m, len(self.dense_layer_indices)) for m in self.dense_layer.layer_linears if m.name in names]
        top = [(m, 1) for m in self.model_linears if m.name in names]
        tower = [(m, n) for m, n in self.tower_linears if m.name in names]  # peft matches a name anywhere
        return layer + top + tower


# ---- config reading -----------------------------------------------------------------


class _Config:
    """Typed, validated access to a config dict; errors name the field."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = raw

    def choices(self, key: str, allowed: tuple[Any, ...], length: int) -> tuple[Any, ...] | None:
        """A list of ``length`` values each one of ``allowed`` (``layer_types``), or None when absent."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != length or any(
                isinstance(v, bool) or v not in allowed for v in value):
            raise EstimateError(f"config.{key}", f"must list one of {list(allowed)} for each of the {length} layers")
        return tuple(value)

    def layer_indices(self, key: str, layers: int) -> tuple[int, ...]:
        """A list of layer indices in ``[0, layers)`` (``mlp_only_layers``); empty when absent."""
        value = self.raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < layers
                                              for v in value):
            raise EstimateError(f"config.{key}", f"must list layer indices between 0 and {layers - 1}")
        return tuple(value)

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


def _head_dim(c: _Config, hidden: int, heads: int, default: int | None = None) -> int:
    """``head_dim`` from the config when given, else the family's default, else
    ``hidden_size // num_attention_heads``."""
    if c.raw.get("head_dim") is not None or default is not None:
        return c.int("head_dim", default)
    if hidden % heads:
        raise EstimateError("config.num_attention_heads", f"must divide hidden_size ({hidden})")
    return hidden // heads


def _kv_heads(c: _Config, heads: int, default: int | None = None) -> int:
    kv = c.int("num_key_value_heads", default or heads)
    if heads % kv:
        raise EstimateError("config.num_key_value_heads", f"must divide num_attention_heads ({heads})")
    return kv


# ---- the fields every family shares -------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The ``config.json`` keys a family keeps the shared fields under: transformers' names unless
    the family's config class has its own (GPT-2's ``n_embd``, OPT's ``ffn_dim``, ...)."""

    hidden_size: str = "hidden_size"
    num_attention_heads: str = "num_attention_heads"
    intermediate_size: str = "intermediate_size"
    num_hidden_layers: str = "num_hidden_layers"
    max_position_embeddings: str = "max_position_embeddings"
    hidden_act: str = "hidden_act"


HF_KEYS = _Keys()


@dataclass(frozen=True)
class _Shared:
    """The :class:`ArchSpec` fields every family has, as :func:`_read_shared` reads them."""

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


def _read_shared(c: _Config, *, tie_word_embeddings: bool, max_position_embeddings: int, hidden_act: str,
                 keys: _Keys = HF_KEYS, gqa: bool = True, intermediate_factor: int | None = None,
                 head_dim: int | None = None, num_key_value_heads: int | None = None) -> _Shared:
    """The fields every family has, read under the family's ``keys``; ``tie_word_embeddings``,
    ``max_position_embeddings`` and ``hidden_act`` are its defaults for a config that leaves them out.

    ``hidden_size``, ``num_attention_heads`` and ``num_hidden_layers`` are required; under a renamed
    key they fall back to transformers' name (GPT-2's ``attribute_map``). ``gqa``: the config may set
    ``num_key_value_heads`` and ``head_dim``; False: every head has its own k and v, and ``head_dim`` is
    ``hidden_size / num_attention_heads`` (GPT-2, OPT, GPT-NeoX, Falcon). ``intermediate_factor``: the
    MLP is that many times ``hidden_size`` wide when the config leaves it out; None: it is required.
    ``head_dim``, ``num_key_value_heads``: the family's config-class defaults where they are not
    ``hidden_size / num_attention_heads`` and ``num_attention_heads`` (Qwen3Config: ``head_dim=128``).
    """
    h = _int_or_alias(c, keys.hidden_size, "hidden_size")
    heads = _int_or_alias(c, keys.num_attention_heads, "num_attention_heads")
    inter_default = None if intermediate_factor is None else intermediate_factor * h
    return _Shared(
        hidden_size=h,
        num_attention_heads=heads,
        num_key_value_heads=_kv_heads(c, heads, num_key_value_heads) if gqa else heads,
        head_dim=_head_dim(c if gqa else _Config({}), h, heads, head_dim),
        intermediate_size=c.int(keys.intermediate_size, inter_default),
        num_hidden_layers=_int_or_alias(c, keys.num_hidden_layers, "num_hidden_layers", maximum=MAX_LAYERS),
        vocab_size=c.int("vocab_size"),
        tie_word_embeddings=c.bool("tie_word_embeddings", tie_word_embeddings),
        max_position_embeddings=c.int(keys.max_position_embeddings, max_position_embeddings, maximum=2**27),
        hidden_act=c.str(keys.hidden_act, hidden_act),
    )


def _int_or_alias(c: _Config, key: str, alias: str, maximum: int = MAX_DIM) -> int:
    """``key``, else transformers' own name for it (``alias``), checked like any integer field."""
    present = c.raw.get(key) is not None or c.raw.get(alias) is None
    return c.int(key if present else alias, maximum=maximum)


# ---- family builders ----------------------------------------------------------------
# Each reads the shared fields (:func:`_read_shared`) with its family's defaults, then states
# what is its own: its modules, norms and flags.


# Families whose transformers model switches to a sliding-window causal mask when the config sets
# ``sliding_window`` (Qwen2 only with ``use_sliding_window``, and then per layer: not modelled).
SLIDING_WINDOW_TYPES = ("mistral", "mixtral", "phi3")


def _sliding_window(c: _Config, model_type: str) -> int:
    if model_type not in SLIDING_WINDOW_TYPES or c.raw.get("sliding_window") is None:
        return 0
    return c.int("sliding_window", maximum=2**27)


def _attention_linears(s: _Shared, qkv_bias: bool, o_bias: bool) -> tuple[LinearSpec, ...]:
    """``q_proj``, ``k_proj``, ``v_proj`` (GQA: ``num_key_value_heads`` wide) and ``o_proj``."""
    h, d, heads, kv = s.hidden_size, s.head_dim, s.num_attention_heads, s.num_key_value_heads
    return (
        LinearSpec("q_proj", h, heads * d, qkv_bias, role="q"),
        LinearSpec("k_proj", h, kv * d, qkv_bias, role="k"),
        LinearSpec("v_proj", h, kv * d, qkv_bias, role="v"),
        LinearSpec("o_proj", heads * d, h, o_bias, role="o"),
    )


def _gated_mlp(h: int, inter: int, bias: bool) -> tuple[LinearSpec, ...]:
    """``gate_proj``, ``up_proj`` (``h -> i``) and ``down_proj`` (``i -> h``)."""
    return (
        LinearSpec("gate_proj", h, inter, bias, role="mlp_in"),
        LinearSpec("up_proj", h, inter, bias, role="mlp_in"),
        LinearSpec("down_proj", inter, h, bias, role="mlp_out"),
    )


def _fused_experts(h: int, moe_inter: int, experts: int, names: tuple[tuple[str, ...], tuple[str, ...]]
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


def _llama_like(c: _Config, model_type: str) -> ArchSpec:
    """llama, mistral, mixtral, qwen2, gemma, gemma2: RMSNorm, RoPE, gated MLP, GQA."""
    gemma = model_type in ("gemma", "gemma2")
    # Gemma 2 names its activation ``hidden_activation``; absent, ``hidden_act`` stands in.
    keys = _Keys(hidden_act="hidden_activation") if model_type == "gemma2" else HF_KEYS
    s = _read_shared(c, keys=keys, tie_word_embeddings=gemma, max_position_embeddings=4096,
                     hidden_act=c.str("hidden_act", "silu"))
    h, d, inter = s.hidden_size, s.head_dim, s.intermediate_size
    qkv_bias = model_type == "qwen2" or c.bool("attention_bias", False)
    o_bias = c.bool("attention_bias", False) and model_type != "qwen2"
    n_experts = 0
    param_targets: tuple[ParamTarget, ...] = ()
    if model_type == "mixtral":
        n_experts = c.int("num_local_experts")
        mlp: tuple[LinearSpec, ...] = ()
        param_targets = _fused_experts(h, inter, n_experts, (("w1", "w3"), ("w2",)))
    else:
        mlp = _gated_mlp(h, inter, c.bool("mlp_bias", False))
    norms_per_layer = 4 if model_type == "gemma2" else 2
    # Gemma2Config's defaults: 50 and 30 (a config may set either to null: no capping)
    softcaps = {k: float(c.raw.get(k, default) or 0.0) if model_type == "gemma2" else 0.0
                for k, default in (("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0))}
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        **_gemma2_windows(c, s.num_hidden_layers) if model_type == "gemma2" else
        {"sliding_window": _sliding_window(c, model_type)},
        layer_linears=_attention_linears(s, qkv_bias, o_bias) + mlp,
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=gemma, unit_offset=gemma),) * norms_per_layer,
        final_norm=NormSpec("rmsnorm", h, fp32_scale=gemma, unit_offset=gemma),
        **softcaps,
        num_local_experts=n_experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 2) if n_experts else 0,
        norm_topk_prob=bool(n_experts),  # Mixtral's router always renormalizes its top-k weights
        routing_weights_fp32=bool(n_experts),
        layer_param_targets=param_targets,
        rotary_dim=_rotary_dim(c, d),
        embed_scale_buffer=gemma,
        supports_sdpa=model_type != "gemma2",
    )


ATTENTION_TYPES = ("full_attention", "sliding_attention")
LLAMA4_ATTENTION_TYPES = ("full_attention", "chunked_attention")


def _gemma2_windows(c: _Config, layers: int) -> dict[str, Any]:
    """Gemma 2's sliding layers: Gemma2Config's ``sliding_window`` (4,096 by default) on every other
    layer, the first one sliding (``layer_types``: ``(i + 1) % 2`` slides)."""
    window = _optional_window(c, True, 4096)
    return {"sliding_window": window, "layer_types": _layer_types(c, layers, window, lambda i: (i + 1) % 2 == 1)}


def _layer_types(c: _Config, layers: int, window: int, slides: Callable[[int], bool]) -> tuple[str, ...]:
    """Each layer's attention type: config.json's ``layer_types`` where given, else the family's
    rule ``slides(layer_index)`` (no layer slides without a window)."""
    given = c.choices("layer_types", ATTENTION_TYPES, layers)
    if given is not None:
        return given
    return tuple(ATTENTION_TYPES[bool(window) and slides(i)] for i in range(layers))


def _qk_norms(s: _Shared, per_head: bool, fp32_scale: bool = False, gemma: bool = False) -> tuple[NormSpec, ...]:
    """``q_norm`` and ``k_norm``: RMSNorm over each head (``head_dim``) or over the projection;
    ``gemma``: Gemma's ``1 + w`` in fp32."""
    if per_head:
        return (NormSpec("rmsnorm", s.head_dim, fp32_scale=fp32_scale or gemma, unit_offset=gemma),) * 2
    return (NormSpec("rmsnorm", s.num_attention_heads * s.head_dim, fp32_scale=fp32_scale),
            NormSpec("rmsnorm", s.num_key_value_heads * s.head_dim, fp32_scale=fp32_scale))


def _optional_window(c: _Config, enabled: bool, default: int = 0) -> int:
    """``sliding_window`` when the family uses one: the config's, the config class's ``default``
    when the key is absent, 0 when it is null."""
    if not enabled or ("sliding_window" in c.raw and c.raw["sliding_window"] is None):
        return 0
    return c.int("sliding_window", default or None, maximum=2**27) if "sliding_window" in c.raw else default


def _qwen3(c: _Config, model_type: str) -> ArchSpec:
    """qwen3 and qwen3_moe (transformers ``modeling_qwen3``/``modeling_qwen3_moe``): Llama's layer with
    ``q_norm``/``k_norm`` RMSNorm(head_dim) on every head before RoPE, no qkv bias, an explicit
    ``head_dim`` (Qwen3Config's default 128, not hidden/heads); sliding window only with
    ``use_sliding_window``, on layers from ``max_window_layers`` on. qwen3_moe: every MLP a sparse
    block of ``num_experts`` experts ``moe_intermediate_size`` wide, ``num_experts_per_tok`` routed."""
    moe = model_type == "qwen3_moe"
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=32768, hidden_act="silu",
                     head_dim=None if moe else 128, num_key_value_heads=None if moe else 32)
    h, L = s.hidden_size, s.num_hidden_layers
    window = _optional_window(c, c.bool("use_sliding_window", False))
    max_window_layers = c.int("max_window_layers", 28, minimum=0, maximum=MAX_LAYERS)
    bias = c.bool("attention_bias", False)
    n_experts, moe_inter = 0, 0
    mlp: tuple[LinearSpec, ...] = _gated_mlp(h, s.intermediate_size, False)
    param_targets: tuple[ParamTarget, ...] = ()
    dense_mlp = mlp
    if moe:
        n_experts, moe_inter = c.int("num_experts", 128), c.int("moe_intermediate_size", 768)
        mlp = ()
        param_targets = _fused_experts(h, moe_inter, n_experts, (("gate_proj", "up_proj"), ("down_proj",)))
    spec = s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=window,
        layer_types=_layer_types(c, L, window, lambda i: i >= max_window_layers),
        layer_linears=_attention_linears(s, bias, bias) + mlp,
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        qk_norms=_qk_norms(s, per_head=True),
        qk_norm_per_head=True,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=n_experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 8) if moe else 0,
        moe_intermediate_size=moe_inter,
        norm_topk_prob=moe and c.bool("norm_topk_prob", False),
        layer_param_targets=param_targets,
        rotary_dim=_rotary_dim(c, s.head_dim),
    )
    if not moe:
        return spec
    # transformers' Qwen3MoeDecoderLayer: dense in ``mlp_only_layers`` and wherever
    # ``(index + 1) % decoder_sparse_step`` is not 0
    only = set(c.layer_indices("mlp_only_layers", L))
    step = c.int("decoder_sparse_step", 1)
    dense = tuple(i for i in range(L) if i in only or (i + 1) % step)
    return _with_dense_layers(spec, dense, _attention_linears(s, bias, bias) + dense_mlp, s.intermediate_size)


def _with_dense_layers(sparse: ArchSpec, indices: tuple[int, ...], linears: tuple[LinearSpec, ...],
                       intermediate_size: int) -> ArchSpec:
    """``sparse`` with the layers at ``indices`` dense: the same attention, norms and window, an MLP
    of ``linears`` (``intermediate_size`` wide), no experts."""
    if not indices:
        return sparse
    dense = replace(sparse, layer_linears=linears, layer_param_targets=(), num_local_experts=0,
                    num_experts_per_tok=0, moe_intermediate_size=0, norm_topk_prob=False, shared_experts=False,
                    intermediate_size=intermediate_size)
    return replace(sparse, dense_layer_indices=indices, dense_layer=dense)


def _olmo2(c: _Config, model_type: str) -> ArchSpec:
    """olmo2 and olmo3 (transformers ``modeling_olmo2``/``modeling_olmo3``): norms after attention and
    after the MLP (no input norm), ``q_norm``/``k_norm`` over the whole q and k projections;
    OLMo 3 adds sliding-window layers (``layer_types``; three of every four slide by default).
    Its RMSNorm scales in fp32 and casts after (``(w * x).to(dtype)``)."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=2048, hidden_act="silu")
    h, L = s.hidden_size, s.num_hidden_layers
    bias = c.bool("attention_bias", False)
    olmo3 = model_type == "olmo3"
    window = _optional_window(c, olmo3, default=4096)
    layer_types = _layer_types(c, L, window, lambda i: (i + 1) % 4 != 0) if olmo3 else ()
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=window,
        layer_types=layer_types,
        rotary_tables=len(set(layer_types)) or 1,
        layer_linears=_attention_linears(s, bias, bias) + _gated_mlp(h, s.intermediate_size, False),
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True),) * 2,
        post_norm=True,
        qk_norms=_qk_norms(s, per_head=False, fp32_scale=True),
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True),
        rotary_dim=_rotary_dim(c, s.head_dim),
    )


def _smollm3(c: _Config, model_type: str) -> ArchSpec:
    """smollm3 (transformers ``modeling_smollm3``): Llama's layer, with RoPE skipped on the layers
    ``no_rope_layers`` marks 0 (by default every ``no_rope_layer_interval``-th, 4). A NoPE layer's
    q and k reach attention as views of their projections, the same bytes a rotated copy takes, so
    memory does not tell the layers apart; with ``use_sliding_window`` the NoPE layers slide."""
    s = _read_shared(c, tie_word_embeddings=True, max_position_embeddings=32768, hidden_act="silu",
                     num_key_value_heads=4)
    h, L = s.hidden_size, s.num_hidden_layers
    interval = c.int("no_rope_layer_interval", 4)
    rope = c.choices("no_rope_layers", (0, 1), L) or tuple(int((i + 1) % interval != 0) for i in range(L))
    window = _optional_window(c, c.bool("use_sliding_window", False))
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=window,
        layer_types=_layer_types(c, L, window, lambda i: not rope[i]),
        layer_linears=(_attention_linears(s, c.bool("attention_bias", False), c.bool("attention_bias", False))
                       + _gated_mlp(h, s.intermediate_size, c.bool("mlp_bias", False))),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        rotary_dim=_rotary_dim(c, s.head_dim),
    )


def _granite(c: _Config, model_type: str) -> ArchSpec:
    """granite (transformers ``modeling_granite``): Llama's modules and names; its multipliers
    (``embedding_multiplier``, ``residual_multiplier``, ``attention_multiplier``, ``logits_scaling``)
    add no parameter; the residual one makes a gradient copy in each layer's backward."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=2048, hidden_act="silu")
    bias = c.bool("attention_bias", False)
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        layer_linears=_attention_linears(s, bias, bias) + _gated_mlp(s.hidden_size, s.intermediate_size,
                                                                      c.bool("mlp_bias", False)),
        layer_norms=(NormSpec("rmsnorm", s.hidden_size),) * 2,
        final_norm=NormSpec("rmsnorm", s.hidden_size),
        rotary_dim=_rotary_dim(c, s.head_dim),
        residual_scaled=True,
        embeddings_rescaled=True,
    )


GEMMA3_KEYS = _Keys(hidden_act="hidden_activation")


def _gemma3_text(c: _Config, model_type: str) -> ArchSpec:
    """gemma3_text (transformers ``modeling_gemma3``): Gemma 2's four norms per layer with
    ``q_norm``/``k_norm`` per head, all ``(1 + w)`` in fp32; sliding-window layers (``layer_types``,
    else five of every ``sliding_window_pattern`` = 6) and a rotary table for each layer type; the
    token embedding scaled by ``sqrt(hidden_size)`` (a buffer); no logit soft-capping by default, so
    sdpa runs."""
    s = _read_shared(c, keys=GEMMA3_KEYS, tie_word_embeddings=True, max_position_embeddings=131072,
                     hidden_act="gelu_pytorch_tanh", head_dim=256, num_key_value_heads=4)
    h, L = s.hidden_size, s.num_hidden_layers
    bias = c.bool("attention_bias", False)
    pattern = c.int("sliding_window_pattern", 6)
    window = _optional_window(c, True, default=4096)
    layer_types = _layer_types(c, L, window, lambda i: bool((i + 1) % pattern))
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=window,
        layer_types=layer_types,
        rotary_tables=len(set(layer_types)),
        layer_linears=_attention_linears(s, bias, bias) + _gated_mlp(h, s.intermediate_size, False),
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True, unit_offset=True),) * 4,
        qk_norms=_qk_norms(s, per_head=True, gemma=True),
        qk_norm_per_head=True,
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True, unit_offset=True),
        rotary_dim=_rotary_dim(c, s.head_dim),
        embed_scale_buffer=True,
        supports_sdpa=c.raw.get("attn_logit_softcapping") is None,
    )


def _phi3(c: _Config, model_type: str) -> ArchSpec:
    """phi3: fused ``qkv_proj`` and ``gate_up_proj``, RMSNorm, no biases."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=4096, hidden_act="silu")
    h, d, inter = s.hidden_size, s.head_dim, s.intermediate_size
    heads, kv = s.num_attention_heads, s.num_key_value_heads
    return s.spec(
        model_type,
        gated_mlp=True,
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


GPT2_KEYS = _Keys(hidden_size="n_embd", num_attention_heads="n_head", intermediate_size="n_inner",
                  num_hidden_layers="n_layer", max_position_embeddings="n_positions",
                  hidden_act="activation_function")


def _gpt2(c: _Config, model_type: str) -> ArchSpec:
    """gpt2: ``Conv1D`` layers with biases, LayerNorm, learned positions, tied head."""
    s = _read_shared(c, keys=GPT2_KEYS, gqa=False, intermediate_factor=4, tie_word_embeddings=True,
                     max_position_embeddings=1024, hidden_act="gelu_new")
    h, inter = s.hidden_size, s.intermediate_size
    return s.spec(
        model_type,
        gated_mlp=False,
        attention_dropout=c.probability("attn_pdrop", 0.1),
        softmax_fp32=False,
        hidden_dropout=c.probability("resid_pdrop", 0.1),
        embedding_dropout=c.probability("embd_pdrop", 0.1),
        layer_linears=(
            LinearSpec("c_attn", h, 3 * h, True, role="qkv"),
            LinearSpec("c_proj", h, h, True, role="o"),
            LinearSpec("c_fc", h, inter, True, role="mlp_in"),
            LinearSpec("c_proj", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        position_embeddings=s.max_position_embeddings,
        attention_output_held=True,  # GPT2Block: ``attn_output, _ = self.attn(...)``, kept through the MLP
    )


OPT_KEYS = _Keys(intermediate_size="ffn_dim", hidden_act="activation_function")


def _opt(c: _Config, model_type: str) -> ArchSpec:
    """opt: biased Linears, LayerNorm, learned positions with an offset of 2, and a token table
    ``word_embed_proj_dim`` wide (OPT-350m: 512 for hidden_size 1024) that lm_head shares."""
    s = _read_shared(c, keys=OPT_KEYS, gqa=False, tie_word_embeddings=True, max_position_embeddings=2048,
                     hidden_act="relu")
    h, ffn = s.hidden_size, s.intermediate_size
    bias = c.bool("enable_bias", True)
    affine = c.bool("layer_norm_elementwise_affine", True)
    pre_norm = c.bool("do_layer_norm_before", True)
    final = NormSpec("layernorm", h, bias=True, affine=affine)
    keep_final = pre_norm and not c.bool("_remove_final_layer_norm", False)
    return s.spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("q_proj", h, h, bias, role="q"),
            LinearSpec("k_proj", h, h, bias, role="k"),
            LinearSpec("v_proj", h, h, bias, role="v"),
            LinearSpec("out_proj", h, h, bias, role="o"),
            LinearSpec("fc1", h, ffn, bias, role="mlp_in"),
            LinearSpec("fc2", ffn, h, bias, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True, affine=affine),) * 2,
        final_norm=final if keep_final else None,
        hidden_dropout=c.probability("dropout", 0.1),
        word_embed_proj_dim=c.int("word_embed_proj_dim", h),
        position_embeddings=s.max_position_embeddings + 2,  # OPTLearnedPositionalEmbedding keeps 2 extra rows
        position_ids_per_row=True,
        mlp_inline=True,
    )


def _gpt_neox(c: _Config, model_type: str) -> ArchSpec:
    """gpt_neox (Pythia): fused ``query_key_value``, LayerNorm, parallel residual."""
    s = _read_shared(c, gqa=False, tie_word_embeddings=False, max_position_embeddings=2048, hidden_act="gelu")
    h, inter = s.hidden_size, s.intermediate_size
    bias = c.bool("attention_bias", True)
    return s.spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("query_key_value", h, 3 * h, bias, role="qkv"),
            LinearSpec("dense", h, h, bias, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, True, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=c.bool("use_parallel_residual", True),
        rotary_dim=_rotary_dim(c, s.head_dim, default_factor=0.25),
        # v is a view of the fused projection's output, and RoPE concatenates q and k back
        # (``torch.cat([q_embed, q_pass])``, also at full rotary): laid out (b, heads, s, d), as Phi-3's
        v_views_fused_qkv=True,
        attention_output_copied=True,
    )


FALCON_KEYS = _Keys(intermediate_size="ffn_hidden_size", hidden_act="activation")


def _falcon(c: _Config, model_type: str) -> ArchSpec:
    """falcon: ``FalconLinear`` (an nn.Linear subclass bitsandbytes leaves unquantized), MQA/GQA."""
    s = _read_shared(c, keys=FALCON_KEYS, gqa=False, intermediate_factor=4, tie_word_embeddings=True,
                     max_position_embeddings=2048, hidden_act="gelu")
    h, heads, d, inter = s.hidden_size, s.num_attention_heads, s.head_dim, s.intermediate_size
    # k and v heads: num_kv_heads in the new decoder architecture, else one (multi_query) or one per head.
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
    parallel = c.bool("parallel_attn", True)
    n_ln = c.raw.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 if (not parallel or n_ln == 2) else 1
    return replace(s, num_key_value_heads=kv).spec(
        model_type,
        gated_mlp=False,
        layer_linears=(
            LinearSpec("query_key_value", h, qkv_out, bias, quantizable=False, role="qkv"),
            LinearSpec("dense", h, h, bias, quantizable=False, role="o"),
            LinearSpec("dense_h_to_4h", h, inter, bias, quantizable=False, role="mlp_in"),
            LinearSpec("dense_4h_to_h", inter, h, bias, quantizable=False, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * norms,
        final_norm=NormSpec("layernorm", h, bias=True),
        parallel_residual=parallel,
        repeats_kv=False,
        mask_materialized=True,
        softmax_fp32=False,  # eager: ``F.softmax(scores + mask, dim=-1, dtype=hidden_states.dtype)``
        rotary_dim=0 if c.bool("alibi", False) else d,
    )


def _gpt_oss(c: _Config, model_type: str) -> ArchSpec:
    """gpt_oss (transformers ``modeling_gpt_oss``): biased q/k/v/o, a learned attention ``sinks``
    logit per head, sliding-window and full layers alternating (``layer_types``), and every MLP a
    sparse block: a biased router ``(E, h)`` and the experts fused as ``gate_up_proj (E, h, 2i)``,
    ``down_proj (E, i, h)`` with biases, stored transposed. None is ``nn.Linear``: bitsandbytes
    quantizes none, and peft 0.21 has no conversion table for gpt_oss, so ``all-linear`` reaches
    the attention projections only. transformers offers no sdpa attention for it (the sinks)."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=131072, hidden_act="silu", head_dim=64,
                     num_key_value_heads=8)
    h, L, inter = s.hidden_size, s.num_hidden_layers, s.intermediate_size
    experts = c.int("num_local_experts", 128)
    window = _optional_window(c, True, default=128)
    bias = c.bool("attention_bias", True)
    return s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        sliding_window=window,
        layer_types=_layer_types(c, L, window, lambda i: (i + 1) % 2 == 1),
        layer_linears=_attention_linears(s, bias, bias),
        layer_tensors=(ParamTensor("sinks", (s.num_attention_heads,), "sink"),),
        attention_sinks=True,
        layer_norms=(NormSpec("rmsnorm", h, fp32_scale=True),) * 2,  # (w * x).to(dtype), as OLMo 2
        final_norm=NormSpec("rmsnorm", h, fp32_scale=True),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 4),
        router="top_k_softmax",
        expert_gate="clamped_swiglu",
        layer_param_targets=(
            ParamTarget("router.weight", (), 1, h, experts, "router", bias=True),
            ParamTarget("gate_up_proj", (), experts, h, 2 * inter, "expert_in", transposed=True, bias=True),
            ParamTarget("down_proj", (), experts, inter, h, "expert_out", transposed=True, bias=True),
        ),
        rotary_dim=_rotary_dim(c, s.head_dim),
        supports_sdpa=False,
    )


def _glm4_moe(c: _Config, model_type: str) -> ArchSpec:
    """glm4_moe (transformers ``modeling_glm4_moe``, GLM-4.5): GQA attention with biased q/k/v (an
    unbiased o_proj), optional per-head q/k norms (``use_qk_norm``), RoPE on a fraction of each head
    (``partial_rotary_factor``, 0.5 by default); the first ``first_k_dense_replace`` layers dense
    (``intermediate_size``), the others sparse: a grouped-sigmoid router ``(E, h)`` with an fp32
    ``e_score_correction_bias`` buffer, ``n_routed_experts`` fused experts ``moe_intermediate_size``
    wide and ``n_shared_experts`` shared ones as one gated MLP of Linears."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=131072, hidden_act="silu")
    bias = c.bool("attention_bias", False)
    attention = _attention_linears(s, bias, False)
    qk_norm = c.bool("use_qk_norm", False)
    nested = c.raw.get("rope_parameters")
    partial = (_Config(nested).fraction("partial_rotary_factor") if isinstance(nested, Mapping) else None) or \
        c.fraction("partial_rotary_factor") or 0.5
    sparse = s.spec(
        model_type,
        **_grouped_moe(c, s.hidden_size, attention, GLM4_MOE),
        qk_norms=_qk_norms(s, per_head=True) if qk_norm else (),
        qk_norm_per_head=qk_norm,
        router_bias_fp32=True,
        rotary_dim=int(s.head_dim * partial),
        # partial RoPE concatenates the rotated and the passed-through halves: q reaches attention
        # laid out (b, heads, s, d), as Phi-3's does
        attention_output_copied=partial < 1,
    )
    return _first_layers_dense(c, s, sparse, attention, GLM4_MOE.first_k_dense_replace)


@dataclass(frozen=True)
class _GroupedMoeDefaults:
    """Where GLM-4.5, DeepSeek-V3 and Mistral 4 differ in their sparse layers: their config classes'
    defaults, the router, and whether peft 0.21 converts their expert names
    (``transformers_weight_conversion``: GLM-4.5 and DeepSeek-V3 through Qwen2 MoE's table; nothing
    for mistral4)."""

    experts: int
    moe_intermediate_size: int
    n_group: int
    topk_group: int
    first_k_dense_replace: int
    router: str
    router_bias_buffer: bool
    peft_names: tuple[tuple[str, ...], tuple[str, ...]]


QWEN2_MOE_NAMES = (("gate_proj", "up_proj"), ("down_proj",))
GLM4_MOE = _GroupedMoeDefaults(128, 1408, 1, 1, 1, "grouped_sigmoid", True, QWEN2_MOE_NAMES)


def _grouped_moe(c: _Config, h: int, attention: tuple[LinearSpec, ...], d: _GroupedMoeDefaults) -> dict[str, Any]:
    """The sparse layer's fields GLM-4.5, DeepSeek-V3 and Mistral 4 share: ``attention`` and two
    RMSNorms, ``n_routed_experts`` fused experts ``moe_intermediate_size`` wide behind a router
    choosing within the best ``topk_group`` of ``n_group`` groups, and ``n_shared_experts`` shared
    ones as one gated MLP of Linears (the sparse layer's ``intermediate_size`` is their width)."""
    experts, moe_inter = c.int("n_routed_experts", d.experts), c.int("moe_intermediate_size", d.moe_intermediate_size)
    shared = moe_inter * c.int("n_shared_experts", 1, minimum=0)
    return dict(
        gated_mlp=True,
        intermediate_size=shared,  # the shared experts' width (the dense layers' is in dense_layer)
        attention_dropout=c.probability("attention_dropout", 0.0),
        layer_linears=attention + (_gated_mlp(h, shared, False) if shared else ()),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 8),
        moe_intermediate_size=moe_inter,
        norm_topk_prob=c.bool("norm_topk_prob", True),
        routing_weights_fp32=d.router == "grouped_sigmoid",
        router=d.router,
        n_group=c.int("n_group", d.n_group),
        topk_group=c.int("topk_group", d.topk_group),
        shared_experts=bool(shared),
        layer_param_targets=_fused_experts(h, moe_inter, experts, d.peft_names),
        router_bias_buffer=experts if d.router_bias_buffer else 0,
    )


def _first_layers_dense(c: _Config, s: _Shared, sparse: ArchSpec, attention: tuple[LinearSpec, ...],
                        default: int) -> ArchSpec:
    """``sparse`` with its first ``first_k_dense_replace`` layers dense: ``attention`` and a gated MLP
    ``intermediate_size`` wide."""
    k = c.int("first_k_dense_replace", default, minimum=0, maximum=MAX_LAYERS)
    dense = tuple(range(min(k, s.num_hidden_layers)))
    mlp = _gated_mlp(s.hidden_size, s.intermediate_size, False)
    return _with_dense_layers(sparse, dense, attention + mlp, s.intermediate_size)


@dataclass(frozen=True)
class _MlaMoeDefaults:
    """Where DeepSeek-V3 and Mistral 4 differ besides their sparse layers: their config classes'
    attention defaults and Mistral 4's q scaled per position."""

    max_position_embeddings: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    moe: _GroupedMoeDefaults
    query_position_scale: str = ""


DEEPSEEK_V3 = _MlaMoeDefaults(4096, 1536, 512, 128,
                              _GroupedMoeDefaults(256, 2048, 8, 4, 3, "grouped_sigmoid", True, QWEN2_MOE_NAMES))
MISTRAL4 = _MlaMoeDefaults(1048576, 1024, 256, 64,
                           _GroupedMoeDefaults(128, 2048, 1, 1, 0, "grouped_softmax", False, ((), ())),
                           query_position_scale="all")


def _deepseek_v3(c: _Config, model_type: str) -> ArchSpec:
    """deepseek_v3 (transformers ``modeling_deepseek_v3``, DeepSeek-V3 and R1): multi-head latent
    attention (``q_a_proj``, ``q_a_layernorm``, ``q_b_proj``; ``kv_a_proj_with_mqa``,
    ``kv_a_layernorm``, ``kv_b_proj``; ``o_proj``), and GLM-4.5's MoE: the first
    ``first_k_dense_replace`` layers dense, the others a grouped-sigmoid router, ``n_routed_experts``
    fused experts and shared experts of Linears. The multi-token-prediction layer of the checkpoint
    is not built by transformers (nor counted here)."""
    return _mla_moe(c, model_type, DEEPSEEK_V3)


def _mistral4(c: _Config, model_type: str) -> ArchSpec:
    """mistral4 (transformers ``modeling_mistral4``, Mistral4ForCausalLM): DeepSeek-V3's layers under
    Mistral4Config's defaults, with a router choosing over softmax scores in the stream's dtype (no
    correction bias), q scaled per position (``llama_4_scaling_beta``), no dense layers by default;
    peft 0.21 has no conversion table for it, so no LoRA target reaches its fused experts."""
    return _mla_moe(c, model_type, MISTRAL4)


def _mla_moe(c: _Config, model_type: str, d: _MlaMoeDefaults) -> ArchSpec:
    """Multi-head latent attention on a MoE with shared experts (DeepSeek-V3, Mistral 4)."""
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=d.max_position_embeddings,
                     hidden_act="silu")
    h, heads = s.hidden_size, s.num_attention_heads
    q_lora = 0 if c.raw.get("q_lora_rank") is None and "q_lora_rank" in c.raw else c.int("q_lora_rank", d.q_lora_rank)
    mla = MlaSpec(q_lora, c.int("kv_lora_rank", d.kv_lora_rank), c.int("qk_nope_head_dim", d.qk_nope_head_dim),
                  c.int("qk_rope_head_dim", 64), c.int("v_head_dim", 128))
    bias = c.bool("attention_bias", False)
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
    sparse = replace(s, head_dim=qk, num_key_value_heads=heads).spec(
        model_type,
        **_grouped_moe(c, h, attention, d.moe),
        qk_norms=latent_norms,
        mla=mla,
        rotary_dim=rope,
        attention_output_copied=True,  # q is concatenated: laid out (b, heads, s, d)
        query_position_scale=d.query_position_scale,
    )
    return _first_layers_dense(c, s, sparse, attention, d.moe.first_k_dense_replace)


def _llama4_text(c: _Config, model_type: str) -> ArchSpec:
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
    s = _read_shared(c, tie_word_embeddings=False, max_position_embeddings=131072, hidden_act="silu", head_dim=128,
                     num_key_value_heads=8)
    h, L, inter = s.hidden_size, s.num_hidden_layers, s.intermediate_size
    experts = c.int("num_local_experts", 16)
    interval = c.int("no_rope_layer_interval", 4)
    no_rope = c.choices("no_rope_layers", (0, 1), L) or tuple(int((i + 1) % interval != 0) for i in range(L))
    chunk = 0 if "attention_chunk_size" in c.raw and c.raw["attention_chunk_size"] is None else \
        c.int("attention_chunk_size", 8192, maximum=2**27)
    given = c.choices("layer_types", LLAMA4_ATTENTION_TYPES, L)
    layer_types = given or tuple(LLAMA4_ATTENTION_TYPES[r] for r in no_rope)
    step = c.int("interleave_moe_layer_step", 1)
    moe = set(c.layer_indices("moe_layers", L) if c.raw.get("moe_layers") is not None else range(step - 1, L, step))
    bias = c.bool("attention_bias", False)
    attention = _attention_linears(s, bias, bias)
    sparse = s.spec(
        model_type,
        gated_mlp=True,
        attention_dropout=c.probability("attention_dropout", 0.0),
        attention_chunk_size=chunk,
        layer_types=layer_types,
        no_rope_layers=no_rope,
        rope_complex=True,
        l2_qk_norm=c.bool("use_qk_norm", True),
        query_position_scale="nope_fp32" if c.bool("attn_temperature_tuning", True) else "",
        layer_linears=attention + (LinearSpec("router", h, experts, False, quantizable=False, role="router",
                                              returns_tuple=True),
                                   *_gated_mlp(h, inter, False)),
        layer_norms=(NormSpec("rmsnorm", h),) * 2,
        final_norm=NormSpec("rmsnorm", h),
        num_local_experts=experts,
        num_experts_per_tok=c.int("num_experts_per_tok", 1),
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
    mlp = c.int("intermediate_size_mlp", 16384)
    return _with_dense_layers(sparse, dense, attention + _gated_mlp(h, mlp, False), mlp)


# ---- multimodal wrappers: a text model, a vision tower and a projector ------------------


@dataclass(frozen=True)
class _Tower:
    """What a wrapper adds to its text model (:attr:`ArchSpec.tower_linears` and the rest)."""

    linears: tuple[tuple[LinearSpec, int], ...]
    tensors: tuple[ParamTensor, ...]
    buffer_bytes: int = 0

    def __add__(self, other: _Tower) -> _Tower:
        return _Tower(self.linears + other.linears, self.tensors + other.tensors,
                      self.buffer_bytes + other.buffer_bytes)


def _tower_linear(name: str, in_features: int, out_features: int, bias: bool, quantizable: bool = True) -> LinearSpec:
    return LinearSpec(name, in_features, out_features, bias, quantizable=quantizable, role="tower")


def _tower_norms(kind: str, size: int, bias: bool, count: int) -> tuple[ParamTensor, ...]:
    return tuple(replace(t, role="tower", count=count) for t in NormSpec(kind, size, bias=bias).tensors())


def _sub_config(c: _Config, key: str) -> _Config:
    value = c.raw.get(key)
    if not isinstance(value, Mapping):
        raise EstimateError(f"config.{key}", "is required for this model_type (an object)")
    return _Config(value)


def _siglip(v: _Config) -> _Tower:
    """The SigLIP vision tower (transformers ``modeling_siglip.SiglipVisionTransformer``, with
    SiglipVisionConfig's defaults): a patch convolution with bias, learned positions (and their
    int64 ``position_ids`` buffer), ``num_hidden_layers`` layers of LayerNorm, q/k/v/out_proj and
    fc1/fc2 (biased Linears), a final LayerNorm; with ``vision_use_head``, an attention-pooling head
    (its ``out_proj`` is torch's NonDynamicallyQuantizableLinear, which bitsandbytes leaves alone)."""
    h, inter = v.int("hidden_size", 768), v.int("intermediate_size", 3072)
    layers = v.int("num_hidden_layers", 12, maximum=MAX_LAYERS)
    patch, channels = v.int("patch_size", 16), v.int("num_channels", 3)
    positions = (v.int("image_size", 224) // patch) ** 2
    linears = tuple((_tower_linear(n, h, h, True), layers) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    linears += ((_tower_linear("fc1", h, inter, True), layers), (_tower_linear("fc2", inter, h, True), layers))
    tensors = (ParamTensor("patch_embedding.weight", (h, channels, patch, patch), "tower"),
               ParamTensor("patch_embedding.bias", (h,), "tower"),
               ParamTensor("position_embedding.weight", (positions, h), "tower"),
               *_tower_norms("layernorm", h, True, 2 * layers), *_tower_norms("layernorm", h, True, 1))
    tower = _Tower(linears, tensors, buffer_bytes=positions * 8)  # position_ids, int64
    if v.bool("vision_use_head", True):
        head_linears = ((_tower_linear("out_proj", h, h, True, quantizable=False), 1),
                        (_tower_linear("fc1", h, inter, True), 1), (_tower_linear("fc2", inter, h, True), 1))
        head_tensors = (ParamTensor("head.probe", (1, 1, h), "tower"),
                        ParamTensor("head.attention.in_proj_weight", (3 * h, h), "tower"),
                        ParamTensor("head.attention.in_proj_bias", (3 * h,), "tower"),
                        *_tower_norms("layernorm", h, True, 1))
        tower = tower + _Tower(head_linears, head_tensors)
    return tower


def _pixtral(v: _Config) -> _Tower:
    """The Pixtral vision tower (transformers ``modeling_pixtral.PixtralTransformer``, with
    PixtralVisionConfig's defaults): a bias-free patch convolution, RMSNorms, q/k/v/o_proj and a
    gated gate/up/down_proj MLP without biases, and a 2-D rotary table (``head_dim / 2`` fp32
    frequencies, kept twice)."""
    h, inter = v.int("hidden_size", 1024), v.int("intermediate_size", 4096)
    layers = v.int("num_hidden_layers", 24, maximum=MAX_LAYERS)
    patch, channels = v.int("patch_size", 16), v.int("num_channels", 3)
    head_dim = _head_dim(v, h, v.int("num_attention_heads", 16))
    linears = tuple((_tower_linear(n, h, h, False), layers) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    linears += tuple((m, layers) for m in (_tower_linear("gate_proj", h, inter, False),
                                           _tower_linear("up_proj", h, inter, False),
                                           _tower_linear("down_proj", inter, h, False)))
    tensors = (ParamTensor("patch_conv.weight", (h, channels, patch, patch), "tower"),
               *_tower_norms("rmsnorm", h, False, 1 + 2 * layers))
    return _Tower(linears, tensors, buffer_bytes=2 * (head_dim // 2) * FP32_BYTES)


GEMMA3_TEXT_DEFAULTS = {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                        "num_attention_heads": 8, "vocab_size": 262208}  # Gemma3TextConfig's


def _gemma3(c: _Config, model_type: str) -> ArchSpec:
    """gemma3 (transformers ``Gemma3ForConditionalGeneration``): a gemma3_text model under
    ``text_config`` (Gemma3TextConfig's defaults for what it leaves out), a SigLIP tower under
    ``vision_config`` and a projector: the bare ``mm_input_projection_weight (vision, text)`` and
    a Gemma RMSNorm. lm_head is tied to the token embedding unless the wrapper says otherwise."""
    text = _gemma3_text(_Config({**GEMMA3_TEXT_DEFAULTS, **_sub_config(c, "text_config").raw}), "gemma3_text")
    vision = _sub_config(c, "vision_config")
    v_h = vision.int("hidden_size", 768)
    projector = _Tower((), (ParamTensor("mm_input_projection_weight", (v_h, text.hidden_size), "tower"),
                            *_tower_norms("rmsnorm", v_h, False, 1)))
    return _wrap(text, model_type, c.bool("tie_word_embeddings", True), _siglip(vision) + projector)


def _mistral3(c: _Config, model_type: str) -> ArchSpec:
    """mistral3 (transformers ``Mistral3ForConditionalGeneration``, Mistral Small 3.x): a mistral
    text model under ``text_config``, a Pixtral tower and a projector (an RMSNorm, the patch
    merger's ``merging_layer (vision·m² -> vision)`` for ``spatial_merge_size`` m, ``linear_1``
    and ``linear_2``). Mistral3Config ties lm_head by default (``tie_word_embeddings``)."""
    text_raw = _sub_config(c, "text_config").raw
    text_type = str(text_raw.get("model_type") or "mistral")
    if text_type not in ("mistral", "llama"):
        raise EstimateError("config.text_config.model_type", f"{text_type!r} under mistral3 is not modelled yet")
    text = _llama_like(_Config(text_raw), text_type)
    vision = _sub_config(c, "vision_config")
    v_h, merge = vision.int("hidden_size", 1024), c.int("spatial_merge_size", 2)
    layers = c.raw.get("vision_feature_layer", -1)
    features = len(layers) if isinstance(layers, list) else 1
    bias = c.bool("multimodal_projector_bias", False)
    projector = _Tower(((_tower_linear("merging_layer", v_h * merge * merge, v_h, False), 1),
                        (_tower_linear("linear_1", v_h * features, text.hidden_size, bias), 1),
                        (_tower_linear("linear_2", text.hidden_size, text.hidden_size, bias), 1)),
                       _tower_norms("rmsnorm", v_h, False, 1))
    return _wrap(text, model_type, c.bool("tie_word_embeddings", True), _pixtral(vision) + projector)


LLAMA4_TEXT_DEFAULTS = {"hidden_size": 5120, "intermediate_size": 8192, "num_hidden_layers": 48,
                        "num_attention_heads": 40, "vocab_size": 202048}  # Llama4TextConfig's


def _llama4(c: _Config, model_type: str) -> ArchSpec:
    """llama4 (Llama 4 Scout and Maverick's ``config.json``): ``AutoModelForCausalLM`` maps it to
    transformers' ``Llama4ForCausalLM``, built from ``text_config`` alone (Llama4TextConfig's
    defaults for what it leaves out): the llama4_text model. The vision tower and projector of
    ``Llama4ForConditionalGeneration`` are not built (Scout: 871,932,416 parameters more)."""
    text = _llama4_text(_Config({**LLAMA4_TEXT_DEFAULTS, **_sub_config(c, "text_config").raw}), "llama4_text")
    return replace(text, model_type=model_type)


def _wrap(text: ArchSpec, model_type: str, tie_word_embeddings: bool, tower: _Tower) -> ArchSpec:
    """The text model's facts under the wrapper's ``model_type``, with its tower and projector."""
    return replace(text, model_type=model_type, tie_word_embeddings=tie_word_embeddings,
                   tower_linears=tower.linears, tower_tensors=tower.tensors, tower_buffer_bytes=tower.buffer_bytes)


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
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3,
    "olmo2": _olmo2,
    "olmo3": _olmo2,
    "smollm3": _smollm3,
    "granite": _granite,
    "gemma3_text": _gemma3_text,
    "gemma3": _gemma3,
    "gpt_oss": _gpt_oss,
    "glm4_moe": _glm4_moe,
    "deepseek_v3": _deepseek_v3,
    "mistral3": _mistral3,
    "llama4_text": _llama4_text,
    "llama4": _llama4,
    "mistral4": _mistral4,
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
    return replace(spec, config=dict(config))
