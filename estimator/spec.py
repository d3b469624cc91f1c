"""The architecture facts of a decoder-only transformer, named as in a Hugging Face ``config.json``.

Every fact is an explicit field named as in ``config.json``; nothing is guessed from ratios.
For each supported ``model_type`` a builder (:mod:`estimator.families`, one module per
transformers ``models/<family>/``) lists the modules that transformers 5.x instantiates: the
Linear layers per decoder layer (name, in/out features, bias, and whether bitsandbytes would
quantize it), the norms, embeddings and any non-Linear parameters (MoE experts).
:meth:`ArchSpec.param_tensors` turns those facts into the one list of the model's parameter
tensors that every count derives from (checked tensor by tensor against
``model.named_parameters()`` of the real model in the tests). :mod:`estimator.arch` holds the
registry of builders and re-exports these types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from .errors import EstimateError
from .units import FP32_BYTES

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
