"""Activation memory of a training step: the tensors autograd saves for backward.

The model is mechanistic, written per tensor that PyTorch keeps, for a training loop
(``model.train()``, ``loss = model(input_ids, labels=..., use_cache=False).loss``,
``loss.backward()``; the recipe's loop, accumulation and autocast move what ``estimate`` adds).
Symbols: ``t = b·s`` tokens, ``h`` hidden size, ``i`` intermediate size, ``a`` bytes of one
residual-stream element, ``F = 4`` bytes of fp32 (``FP32_BYTES``).

What is saved, and why:
- RMSNorm upcasts its input to fp32 and ``pow`` keeps that copy (``t·h·F``) plus the fp32
  ``rsqrt`` (``t·F``); if the norm weight trains, its multiply keeps the normalized ``t·h·a``.
- LayerNorm keeps its input (``t·h·a``) and fp32 mean and rstd (``2·t·F``).
- A Linear keeps its input only if its weight trains. A peft LoRA module casts its input to the
  adapter dtype (fp32) and ``lora_A`` keeps that copy (or the dropout output and its mask);
  ``lora_B`` keeps ``lora_A``'s output (``t·r·F``).
- Attention keeps q, k, v after RoPE and, for sdpa / flash kernels, the output and the fp32
  log-sum-exp (``b·n·s·F``); eager attention keeps the fp32 softmax and its cast (``b·n·s²``)
  and GQA-expanded k, v.
- The MLP keeps the activation input, its output and the up projection (gated) and the
  activation output for the down projection.
- The loss upcasts logits to fp32 and ``log_softmax`` keeps its fp32 output (``t·V·F``).
Gradient checkpointing (non-reentrant, per decoder layer) keeps only each layer's input and
recomputes one layer at a time in backward.
"""

from __future__ import annotations

from dataclasses import replace

from . import chunked_loss
from .adapters import param_wrapper_tensors
from .arch import ArchSpec, LinearSpec, NormSpec, ParamTarget
from .setting import ActivationSetting
from .units import BOOL_BYTES, FP32_BYTES, INT64_BYTES

MASK_BYTES = BOOL_BYTES  # torch's native_dropout keeps its mask as bool
# torch 2.13.0 aten/src/ATen/native/transformers/attention.cpp, preprocess_mask: a mask whose last
# dim is not a multiple of ``mem_eff_alignment = 8`` is padded to one (pad_bias), then sliced back
# (earlier releases padded to 16). profiler/kernels.py states it on its own; a test compares.
MEM_EFF_BIAS_ALIGNMENT = 8
INPUT_GROUPS = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "qkv": "attn_in", "o": "attn_out",
                "q_latent": "q_latent", "kv_latent": "kv_latent",
                "mlp_in": "mlp_in", "mlp_out": "mlp_act", "proj_in": "embedded", "proj_out": "decoded"}
# Activation functions that transformers builds from several pointwise ops, each keeping a
# t·i tensor: gelu_new / gelu_pytorch_tanh in Python keep input, tanh output, 0.5·x, 1+tanh.
COMPOSITE_ACT_SAVED = {"gelu_new": 4}
# ... and those whose backward reads their output, not their input (``threshold_backward``): in a
# plain MLP that output is the down projection's input, one tensor both keep.
OUTPUT_SAVING_ACTS = ("relu",)
# ... and, without autograd, how many of those partial results are alive at once next to the
# input: 0.5·x, x³ and 0.044715·x³ for gelu_new.
COMPOSITE_ACT_TRANSIENT = {"gelu_new": 3}


def norm_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one norm of the residual stream keeps for backward."""
    t, h, a = st.tokens, arch.hidden_size, st.stream_bytes
    norm = arch.layer_norms[0]
    if norm.kind == "layernorm":
        return t * h * a + 2 * t * FP32_BYTES
    return rms_norm_saved(norm, t, h, st)


def rms_norm_saved(norm: NormSpec, rows: int, width: int, st: ActivationSetting) -> float:
    """Bytes an RMSNorm over ``rows`` vectors of ``width`` keeps: its fp32 input (``pow`` and the
    multiply by ``rsqrt`` share it), the fp32 ``rsqrt`` per row and, if its weight trains, the
    normalized tensor the weight multiplies: in the stream's dtype (Llama casts first), in fp32
    where the family scales before casting (Gemma's ``1 + w``, OLMo 2's ``w * x``)."""
    if not st.full:
        return rows * width * FP32_BYTES + rows * FP32_BYTES
    weight_grad = rows * width * (FP32_BYTES if norm.fp32_scale else st.stream_bytes)
    if norm.unit_offset:
        weight_grad += width * FP32_BYTES  # a trained Gemma weight: the multiply keeps the fp32 ``1 + w`` too
    return rows * width * FP32_BYTES + rows * FP32_BYTES + weight_grad


def qk_norm_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes ``q_norm`` and ``k_norm`` keep: RMSNorms over every head's vector (``t·heads`` rows of
    ``head_dim``: Qwen3, Gemma 3) or over each token's whole projection (OLMo 2)."""
    heads = (arch.num_attention_heads, arch.num_key_value_heads)
    if arch.l2_qk_norm:
        return l2_qk_norm_saved(arch, st)
    total = 0.0
    for norm, n in zip(arch.qk_norms, heads, strict=False):
        rows = st.tokens * (n if arch.qk_norm_per_head else 1)
        total += rms_norm_saved(norm, rows, norm.size, st)
    return total


def l2_qk_norm_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Llama 4's ``Llama4TextL2Norm`` on q and k of the layers that rotate: per head,
    ``x.float() * rsqrt(mean(x²) + eps)`` without a weight, keeping the fp32 copy and the fp32
    ``rsqrt`` of each row (transformers ``modeling_llama4``)."""
    if not st.rope:
        return 0.0
    rows = st.tokens * (arch.num_attention_heads + arch.num_key_value_heads)
    return rows * arch.head_dim * FP32_BYTES + rows * FP32_BYTES


def temperature_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """The factor per position that scales q, kept by the multiply: Llama 4's layers without RoPE,
    ``log1p(floor((pos + 1) / floor_scale)) · attn_scale + 1`` in fp32 (``attn_temperature_tuning``);
    every layer of Mistral 4, ``1 + beta · log(1 + floor(pos / original_max_position_embeddings))``
    cast to q's dtype (``llama_4_scaling_beta``)."""
    if arch.query_position_scale == "all":
        return st.seq * st.stream_bytes
    if arch.query_position_scale == "nope_fp32" and not st.rope:
        return st.seq * FP32_BYTES
    return 0.0


def _input_widths(arch: ArchSpec) -> dict[str, int]:
    """Width of the input each group of Linears reads (OPT's project_in reads the token embedding's
    output, project_out the layers' output)."""
    mla = arch.mla
    return {"attn_in": arch.hidden_size, "attn_out": arch.attention_out_dim, "mlp_in": arch.hidden_size,
            "mlp_act": arch.intermediate_size, "embedded": arch.embedding_dim, "decoded": arch.hidden_size,
            "q_latent": mla.q_lora_rank if mla else 0, "kv_latent": mla.kv_lora_rank if mla else 0}


def linear_inputs_saved(arch: ArchSpec, st: ActivationSetting, modules: tuple[LinearSpec, ...]) -> float:
    """Bytes the Linears of one layer keep of their inputs (base weight and LoRA adapters)."""
    t = st.tokens
    widths = _input_widths(arch)
    total = 0.0
    shared_saved: set[str] = set()
    adapter = adapter_compute_bytes(st)
    for m in modules:
        group = INPUT_GROUPS.get(m.role)
        if group is None:
            continue
        if group == "mlp_in" and arch.parallel_residual and len(arch.layer_norms) == 1:
            group = "attn_in"  # Falcon-7B's one norm feeds attention and the MLP: one tensor for both
        width = widths[group]
        if st.full:
            shared_saved.add(group)
            continue
        if m.name not in st.lora_targets:
            continue
        if st.lora_variant == "vera":
            total += vera_saved(m, st)
            continue
        total += t * st.lora_r * adapter  # lora_A output, kept by lora_B
        x = group_input_bytes(st, group)
        if st.lora_dropout > 0:
            dropped = x if _adapter_input_uncast(st) else st.adapter_bytes  # the dtype the dropout runs in
            total += t * width * (adapter + dropout_mask_bytes(st, dropped))
        elif _adapter_input_copied(st, x):
            total += t * width * adapter  # this module's own cast of its input
        else:
            shared_saved.add(group)
    copied = arch.attention_output_copied and not _cuda_memory_efficient(arch, st)
    if fused_attention(arch, st) and not copied:
        # o_proj reads the fused kernel's output, laid out (b, s, heads, head_dim): the transpose and
        # reshape before o_proj are views, so what o_proj keeps is what attention_saved counts
        shared_saved.discard("attn_out")
    if arch.hidden_act in OUTPUT_SAVING_ACTS and not arch.gated_mlp:
        shared_saved.discard("mlp_act")  # ReLU's output, which :func:`mlp_saved` counts
    total += sum(t * widths[g] * group_input_bytes(st, g) for g in shared_saved)
    return total


def adapter_compute_bytes(st: ActivationSetting) -> float:
    """The dtype a LoRA adapter computes in: its own (fp32, or TRL's bf16), or under autocast the
    autocast dtype (``lora_A`` and ``lora_B`` are ``nn.Linear``: autocast casts their input and an
    fp32 weight)."""
    return st.autocast_bytes or st.adapter_bytes


def _adapter_input_uncast(st: ActivationSetting) -> bool:
    """Whether peft hands an adapter its input as it comes: its bitsandbytes layers skip the cast
    to the adapter's dtype while autocast is on (peft 0.21 ``tuners/lora/bnb.py``: ``requires_conversion
    = not torch.is_autocast_enabled()``, which asks about CUDA's autocast only: under CPU autocast it
    answers False); every other layer casts (``_cast_input_dtype``). The CUDA side is read from the
    source, not measured."""
    return bool(st.autocast_bytes) and st.quantized and st.device == "cuda"


def _adapter_input_copied(st: ActivationSetting, x: float) -> bool:
    """Whether ``lora_A`` keeps a cast copy of its input (of ``x`` bytes an element) rather than the
    input itself: peft casts the input to the adapter's dtype (a copy unless it is in it already);
    autocast then casts an fp32 one to its own (always a copy), or where peft's bitsandbytes layers
    skip their cast, the input itself unless it is in the autocast dtype."""
    if _adapter_input_uncast(st):
        return x != st.autocast_bytes
    if st.autocast_bytes and st.adapter_bytes != st.autocast_bytes:
        return True
    return x != st.adapter_bytes


def attention_bytes(st: ActivationSetting) -> float:
    """Bytes of one element of q, k, v and the attention output as the kernel gets them: the
    stream's, or under autocast the autocast dtype (sdpa and ``matmul`` are on autocast's
    lower-precision lists, CPU's and CUDA's)."""
    return st.autocast_bytes or st.stream_bytes


def group_input_bytes(st: ActivationSetting, group: str) -> float:
    """Bytes of one element of the input a group of Linears reads: the stream's, but o_proj's,
    which is the attention output (:func:`attention_bytes`). (The MLP's product stays in the
    stream's dtype: a 4-bit Linear returns its input's dtype, and autocast is only modelled where the
    other Linears' dtype is the stream's.)"""
    return attention_bytes(st) if group == "attn_out" else st.stream_bytes


def fused_attention(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether attention runs a fused kernel (sdpa's flash / memory-efficient kernels, flash-attn),
    which keeps its output and a log-sum-exp instead of the ``s×s`` probabilities. sdpa on a CPU
    takes its math path when attention dropout is on (the CPU flash kernel has no dropout)."""
    if st.attn == "eager":
        return False
    return not (st.device == "cpu" and arch.attention_dropout > 0)


def attention_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes the attention core keeps: q, k, v and either the s×s probabilities (eager, or sdpa's
    math path) or the output + LSE (fused sdpa / flash kernels), plus the additive mask a masked
    sdpa call keeps; in :func:`attention_bytes`."""
    b, s, t, a = st.batch, st.seq, st.tokens, attention_bytes(st)
    n = arch.num_attention_heads
    qkv = t * (arch.q_dim + 2 * arch.kv_dim) * a
    if arch.mla is not None:
        # q and k are new tensors (q concatenated, k assembled in place); v is a view of kv_b_proj's
        # output, which the kernel's saving keeps whole
        mla = arch.mla
        qkv = t * n * (2 * mla.qk_head_dim + mla.qk_nope_head_dim + mla.v_head_dim) * a
        if st.attn == "eager":
            return qkv + b * n * s * s * _eager_probs_saved(arch, st)
        if st.device == "cpu":
            # v narrower than q and k: no CPU kernel takes it, sdpa's math path runs in fp32 and
            # keeps fp32 q, k, v and the fp32 softmax
            return t * n * (2 * mla.qk_head_dim + mla.v_head_dim) * FP32_BYTES + b * n * s * s * FP32_BYTES
        return qkv + t * arch.attention_out_dim * a + b * n * s * FP32_BYTES
    if st.attn == "eager":
        expanded = 2 * t * (arch.q_dim - arch.kv_dim) * a if arch.repeats_kv else 0.0  # repeat_kv copies under GQA
        if arch.attention_sinks:
            return qkv + expanded + _sink_probs_saved(arch, st)
        return qkv + expanded + b * n * s * s * _eager_probs_saved(arch, st)
    if not fused_attention(arch, st):
        return _sdpa_math_saved(arch, st)
    if _broadcast_kv_math_path(arch, st):
        return _broadcast_math_saved(arch, st)
    if _kv_expanded(arch, st):
        qkv = t * 3 * arch.q_dim * a
    elif arch.v_views_fused_qkv and a == st.stream_bytes:
        # q and k leave the fused projection's output through RoPE (new tensors), v as a view of it
        # that the fused kernel keeps as it is (eager's matmul keeps a contiguous copy instead):
        # saving v keeps the whole fused output alive (unless autocast casts v into a tensor of its own)
        qkv += t * (arch.q_dim + arch.kv_dim) * a
    out = t * arch.q_dim * a
    lse = b * n * s * FP32_BYTES
    return qkv + out + lse + sdpa_mask_saved(arch, st)


def sdpa_masked(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether transformers hands sdpa a materialized mask (the layer's sliding window, which the
    sequence reaches; every layer's where the family always materializes it, Falcon)."""
    return st.attn == "sdpa" and (arch.mask_materialized or 0 < st.window <= st.seq)


def layer_kinds(arch: ArchSpec, st: ActivationSetting) -> tuple[tuple[ArchSpec, ActivationSetting, int], ...]:
    """(one kind of layer, its setting, how many layers of that kind): layers differ by window, by
    RoPE (Llama 4) and, in a model with dense and sparse layers, by MLP."""
    return tuple((kind, replace(st, window=w, rope=rope), n) for kind, w, rope, n in arch.kind_counts)


def layer_at(arch: ArchSpec, st: ActivationSetting, index: int) -> tuple[ArchSpec, ActivationSetting]:
    """Decoder layer ``index`` (-1: the top one, the first backward reaches; 0: the bottom one)."""
    if not arch.num_hidden_layers:
        return arch, replace(st, window=0, rope=True)
    return arch.layer_arch(index % arch.num_hidden_layers), replace(st, window=arch.layer_windows[index],
                                                                    rope=arch.layer_rope[index])


def sdpa_mask_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """The additive mask a fused kernel keeps for backward, one per layer: the bool mask converted
    to 0/-inf in the stream's dtype (``convert_boolean_attn_mask``), its rows padded to a multiple of
    ``MEM_EFF_BIAS_ALIGNMENT`` for CUDA's memory-efficient kernel (attention.cpp, ``preprocess_mask``)."""
    if not sdpa_masked(arch, st):
        return 0.0
    row = -(-st.seq // MEM_EFF_BIAS_ALIGNMENT) * MEM_EFF_BIAS_ALIGNMENT if st.device == "cuda" else st.seq
    return st.batch * st.seq * row * attention_bytes(st)


def _cuda_memory_efficient(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether sdpa runs CUDA's memory-efficient kernel (flash takes 16-bit inputs without a mask)."""
    return st.device == "cuda" and st.attn == "sdpa" and (attention_bytes(st) == FP32_BYTES or sdpa_masked(arch, st))


def _kv_expanded(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether k and v reach the kernel with every query head under GQA: transformers repeats them
    (``repeat_kv``) when it passes a mask, and on CUDA an fp32 stream (QLoRA's) runs the
    memory-efficient kernel, which takes equal head counts (the flash kernel, 16-bit only, reads
    grouped heads natively)."""
    if arch.kv_dim == arch.q_dim or not arch.repeats_kv:
        return False
    return sdpa_masked(arch, st) or _cuda_memory_efficient(arch, st)


def _sink_probs_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """gpt-oss's eager attention with sinks: each row's scores get the head's sink logit appended
    (``s + 1`` columns), the row maximum is subtracted (``max`` keeps its int64 indices) and the
    softmax runs in the dtype of the joined scores; its output is kept (the matmul with v keeps a
    view of it, or under autocast a cast of its own)."""
    b, s, n, a = st.batch, st.seq, arch.num_attention_heads, attention_bytes(st)
    # ``cat`` with the sinks, a parameter in the stream's dtype (fp32 after kbit preparation),
    # promotes the scores; under autocast the product with v then keeps its own cast of them
    combined = max(a, st.stream_bytes)
    cast = b * n * s * s * a if combined != a else 0.0
    return b * n * s * (s + 1) * combined + cast + b * n * s * INDEX_BYTES


def _eager_probs_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes per ``b·n·s²`` element eager attention keeps: the softmax output (fp32 where the
    family computes it in fp32, as Llama's ``softmax(dtype=float32)``; in the stream's dtype for
    GPT-2) and its cast back; with attention dropout, the mask and the dropped weights."""
    a = attention_bytes(st)
    softmax = FP32_BYTES if arch.softmax_fp32 else a
    cast = a if softmax != a else 0
    dropout = dropout_mask_bytes(st, a) + a if arch.attention_dropout > 0 else 0
    softcap = a if arch.attn_logit_softcapping else 0  # Gemma 2's tanh(scores / c) keeps its output
    return softmax + cast + dropout + softcap


def dropout_mask_bytes(st: ActivationSetting, input_bytes: float) -> float:
    """Bytes per element of the mask a training dropout keeps for backward: CUDA's fused
    ``native_dropout`` keeps a bool mask; on a CPU ``_dropout_impl`` draws its noise into
    ``empty_like(input).bernoulli_()`` and multiplies, keeping noise of the input's dtype
    (ATen ``native/Dropout.cpp``, torch 2.13)."""
    return MASK_BYTES if st.device == "cuda" else input_bytes


def _sdpa_math_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """sdpa on a CPU with attention dropout in training: no fused kernel takes dropout there, so
    PyTorch runs its math path, in fp32 for 16-bit inputs. It keeps the fp32 (scaled) q, k and v
    and, per ``b·n·s²`` element, the fp32 softmax, the dropout mask and the dropped weights."""
    b, s, t = st.batch, st.seq, st.tokens
    return t * (arch.q_dim + 2 * arch.q_dim) * FP32_BYTES + 3 * b * arch.num_attention_heads * s * s * FP32_BYTES


def _broadcast_math_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """sdpa's math path in training for k and v of fewer heads than q (:func:`_broadcast_kv_math_path`;
    torch 2.13, ``_scaled_dot_product_attention_math``): the products' ``matmul`` broadcasts k and v to
    every query head, and the ``bmm`` it runs keeps the fp32 scaled q and those expanded fp32 copies
    of k and v; the fp32 softmax is kept too. The additive mask is not (an in-place add keeps nothing)."""
    b, s, t = st.batch, st.seq, st.tokens
    return t * 3 * arch.q_dim * FP32_BYTES + b * arch.num_attention_heads * s * s * FP32_BYTES


def mlp_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes the MLP keeps between its Linears (activation input/output, gated product)."""
    t, i, a = st.tokens, arch.expert_width, st.stream_bytes
    act_saved = COMPOSITE_ACT_SAVED.get(arch.hidden_act, 1)
    if arch.expert_gate == "clamped_swiglu":
        per_token = CLAMPED_SWIGLU_SAVED * i * a
    elif arch.gated_mlp:
        per_token = (act_saved + 2) * i * a  # act input (+ pieces), act output, up output
    else:
        per_token = act_saved * i * a
    if arch.num_local_experts:
        # shared experts: a gated MLP ``intermediate_size`` wide on every token, beside the routed ones
        shared = t * (act_saved + 2) * arch.intermediate_size * a if arch.shared_experts else 0
        return t * routed_rows(arch) * per_token + shared + moe_routing_saved(arch, st)
    return t * per_token


def routed_rows(arch: ArchSpec) -> int:
    """Rows each token makes in the experts: its ``k`` routed copies, or one per expert where
    every expert runs on every token (Llama 4's ``hidden_states.repeat(E, 1)``)."""
    return arch.num_local_experts if arch.expert_dispatch == "all" else arch.num_experts_per_tok


# gpt-oss's ``_apply_gate``: its clamps keep the whole gate_up output (2i), then the sigmoid's
# output, the clamped gate, ``up + 1`` and the gated product (i each) stay for backward.
CLAMPED_SWIGLU_SAVED = 6
INDEX_BYTES = INT64_BYTES  # int64 indices


def moe_routing_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What routing keeps in a sparse block run by transformers' grouped_mm experts
    (``integrations/moe.py``, ``grouped_mm_experts_forward``), per token, for ``k`` routed rows:

    - the router: softmax over all ``E`` logits in fp32 (Mixtral, Qwen3 MoE; its output kept), and
      with ``norm_topk_prob`` the sum and the fp32 top-``k`` values its division keeps; or softmax
      over the top-``k`` logits in the stream's dtype (gpt-oss); ``topk``'s int64 indices;
    - the dispatch: three int64 indices per routed row (the sorted gather of the hidden states,
      of the routing weights, and the un-permute), the routing weight of each row and each
      expert's output row, kept by the weighting multiply (``k·h``);
    - per layer, the int32 group offsets the grouped matmul keeps (``E``).
    """
    t, a, k, E = st.tokens, st.stream_bytes, arch.num_experts_per_tok, arch.num_local_experts
    if arch.expert_dispatch == "all":
        return t * all_experts_routing_per_token(arch, st)
    norm: float = (1 + k) * FP32_BYTES if arch.norm_topk_prob else 0
    per_layer = E * 4  # the grouped matmul's int32 offsets
    if arch.router == "top_k_softmax":
        router = k * a
    elif arch.router in ("grouped_sigmoid", "grouped_softmax"):
        # the scores (fp32 sigmoid; Mistral 4's softmax in the stream's dtype), the bool mask of the
        # groups not chosen, the int64 indices of each group's top two and of the chosen groups; the
        # sigmoid router's fp32 copy of its weight, per layer
        fp32 = arch.router == "grouped_sigmoid"
        scores = FP32_BYTES if fp32 else a
        norm = (1 + k) * scores if arch.norm_topk_prob else 0
        router = E * scores + E * MASK_BYTES + (2 * arch.n_group + arch.topk_group) * INDEX_BYTES + norm
        per_layer += E * arch.hidden_size * FP32_BYTES if fp32 else 0
    else:
        router = E * FP32_BYTES + norm
    weight = FP32_BYTES if arch.routing_weights_fp32 else a
    per_row = INDEX_BYTES + 3 * INDEX_BYTES + weight + arch.hidden_size * a
    return t * (router + k * per_row) + per_layer


def all_experts_routing_per_token(arch: ArchSpec, st: ActivationSetting) -> float:
    """Llama 4's routing (``Llama4Router``, ``Llama4TextMoe``), per token: ``topk``'s int64 indices,
    the fp32 sigmoid of the scores (``-inf`` outside the top k), and the multiply that weights
    the ``E`` repeated copies of the token keeps both the copies (``E·h``) and the scores laid out
    per row (``E``), in the stream's dtype."""
    a, k, E = st.stream_bytes, arch.num_experts_per_tok, arch.num_local_experts
    return k * INDEX_BYTES + E * FP32_BYTES + E * (arch.hidden_size + 1) * a


def expert_inputs_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Inputs the MoE router and fused experts keep once their weight has a gradient: full
    fine-tuning, or LoRA on them through peft's ParamWrapper. Each expert matmul sees ``k``
    routed copies of every token; the router sees each token once. Trained expert biases
    (gpt-oss) are gathered per routed row by expert id, and the gather keeps those int64 ids
    (one tensor, shared by both biases)."""
    t, a = st.tokens, st.stream_bytes
    total = 0.0
    biases_train = False
    shared_linears = any(m.role == "mlp_in" for m in arch.layer_linears)
    for p in arch.layer_param_targets:
        if p.role == "router" and st.full and shared_linears and arch.router != "grouped_sigmoid":
            continue  # it reads the normalized input the shared experts' trained Linears keep (Mistral 4)
        if st.full or p.name in st.wrapped_targets:
            copies = routed_rows(arch) if p.experts > 1 else 1
            # a grouped-sigmoid router multiplies an fp32 copy of its input
            width = FP32_BYTES if p.role == "router" and arch.router == "grouped_sigmoid" else a
            total += t * copies * p.in_features * width
            biases_train = biases_train or (p.bias and p.experts > 1 and st.full)
    if biases_train:
        total += t * arch.num_experts_per_tok * INDEX_BYTES
    return total


def _wrapped(arch: ArchSpec, st: ActivationSetting) -> list[ParamTarget]:
    return [p for p in arch.layer_param_targets if p.name in st.wrapped_targets]


def param_wrapper_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What peft's ParamWrapper adds per layer: the adapted weight ``W' = W + s·B·A``.

    ``W'`` is a parametrization computed on every forward (``baddbmm`` for stacked experts,
    ``W + delta`` for the router), in the weight's dtype; the matmul that reads it keeps it
    for the input gradient, so a full-size copy of every wrapped parameter lives until
    backward. The expert factors are cast to that dtype first (kept by ``baddbmm``).
    """
    a = st.stream_bytes
    total = 0.0
    for p in _wrapped(arch, st):
        total += p.weight_params * a
        if p.experts > 1 and a != st.adapter_bytes:
            total += sum(t.numel for t in param_wrapper_tensors(p, st.lora_r)) * a
    return total


def parallel_norms_share_input(arch: ArchSpec, st: ActivationSetting) -> float:
    """Under a parallel residual with two norms (GPT-NeoX; Falcon's new decoder architecture) both
    read the layer's input, and a LayerNorm keeps the tensor it gets: one tensor, which
    :func:`norm_saved` counts for each norm."""
    if not (arch.parallel_residual and len(arch.layer_norms) == 2 and arch.layer_norms[0].kind == "layernorm"):
        return 0.0
    return st.tokens * arch.hidden_size * st.stream_bytes


def layer_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one decoder layer keeps for backward without checkpointing."""
    norms = len(arch.layer_norms) * norm_saved(arch, st) - parallel_norms_share_input(arch, st)
    return (
        norms
        + linear_inputs_saved(arch, st, arch.layer_linears)
        + qk_norm_saved(arch, st)
        + temperature_saved(arch, st)
        + attention_saved(arch, st)
        + mlp_saved(arch, st)
        + expert_inputs_saved(arch, st)
        + param_wrapper_saved(arch, st)
        + residual_dropout_saved(arch, st)
        + dora_saved(arch, st)
        + autocast_weight_copies(arch, st)
    )


def autocast_weight_copies(arch: ArchSpec, st: ActivationSetting) -> float:
    """Autocast's weight-cast cache, per layer: a copy in the autocast dtype of every fp32 weight
    that trains and runs in the forward (torch 2.13 ``autocast_mode.cpp``, ``cached_cast``: "cache
    lower_precision_fp casts of fp32 model weights"), the LoRA adapters' ``A`` and ``B``; kept
    until the forward leaves autocast, and by each adapter's matmul until its backward. (Weights
    already in the autocast dtype are used as they are: full fine-tuning of 16-bit weights.)"""
    if not st.autocast_bytes or st.full or st.adapter_bytes == st.autocast_bytes:
        return 0.0
    adapted = [m for m in arch.layer_linears if m.name in st.lora_targets]
    return sum(st.lora_r * (m.in_features + m.out_features) for m in adapted) * st.autocast_bytes


def autocast_cache_held(arch: ArchSpec, st: ActivationSetting) -> float:
    """Under checkpointing the layers keep nothing, but the autocast cache still holds every
    layer's :func:`autocast_weight_copies` until the forward (the loss inside it) is done."""
    if not st.gradient_checkpointing:
        return 0.0
    return sum(n * autocast_weight_copies(kind, kind_st) for kind, kind_st, n in layer_kinds(arch, st))


def head_weight_copy(arch: ArchSpec, st: ActivationSetting) -> float:
    """Under autocast, ``lm_head`` in another dtype than autocast's (fp32 after peft's
    ``prepare_model_for_kbit_training``) computes with a cast copy of its weight, ``V x
    embedding_dim`` in the autocast dtype, which its matmul keeps for the input gradient until
    lm_head's backward (a frozen weight is not cached: cast on each call)."""
    if not st.autocast_bytes or st.stream_bytes == st.autocast_bytes:
        return 0.0
    return arch.vocab_size * arch.embedding_dim * st.autocast_bytes


def vera_saved(m: LinearSpec, st: ActivationSetting) -> float:
    """What a VeRA-adapted Linear keeps (peft 0.21 ``vera/layer.py``, ``Linear.forward``:
    ``lambda_b * F.linear(lambda_d * F.linear(dropout(x), A), B)`` with A and B frozen buffers): the
    fp32 outputs of A (``r`` wide) and of B (``out`` wide), which the multiplies by the trained
    ``lambda_d`` and ``lambda_b`` keep; not the input, which frozen A does not need (with dropout,
    its mask)."""
    mask = st.tokens * m.in_features * dropout_mask_bytes(st, st.adapter_bytes) if st.lora_dropout > 0 else 0.0
    return st.tokens * (st.lora_r + m.out_features) * st.adapter_bytes + mask


def dora_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What DoRA's forward keeps beyond LoRA's, per adapted Linear of ``out`` features (peft 0.21
    ``DoraLinearLayer.forward``): ``(m / ||W + sBA|| - 1) * base_result + m / ||W + sBA|| *
    lora_B(lora_A(x)) * s`` keeps the base output (the base layer's, in the stream's dtype; with
    LoRA dropout DoRA's own ``F.linear`` of the fp32 dropped input) for the magnitude's gradient,
    and the fp32 LoRA output, ``t·out`` each; with dropout, that ``F.linear`` also keeps the fp32
    copy of the (dequantized) base weight it multiplies, ``out·in``, for the input's gradient. The
    weight norm is detached: nothing of it is kept."""
    if st.lora_variant != "dora" or st.full:
        return 0.0
    adapted = [m for m in arch.layer_linears if m.name in st.lora_targets]
    outputs = st.tokens * sum(m.out_features for m in adapted)
    if st.lora_dropout > 0:
        return outputs * 2 * st.adapter_bytes + sum(m.weight_params for m in adapted) * st.adapter_bytes
    return outputs * (st.stream_bytes + st.adapter_bytes)


def mlp_output_dropout_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """The mask of the MLP branch's residual dropout (GPT-2, OPT): the first thing a layer's
    backward uses up, before the MLP's own backward."""
    return residual_dropout_saved(arch, st) / 2


def residual_dropout_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """GPT-2 and OPT drop out the attention and the MLP outputs before each residual add: two
    masks of ``t·h`` per layer."""
    if arch.hidden_dropout <= 0:
        return 0.0
    return 2 * st.tokens * arch.hidden_size * dropout_mask_bytes(st, st.stream_bytes)


def embedding_dropout_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """GPT-2 drops out the embeddings' sum (``embd_pdrop``): one mask of ``t·h``, kept to the end
    of backward (the dropped sum is layer 0's input, counted there) where the sum needs a gradient:
    the embeddings train, or checkpointing hooks their output to require one
    (:func:`embedding_leaf_held`); of frozen ones autograd records nothing."""
    if arch.embedding_dropout <= 0 or not (st.full or st.gradient_checkpointing):
        return 0.0
    return st.tokens * arch.hidden_size * dropout_mask_bytes(st, st.stream_bytes)


def checkpoint_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one checkpointed layer keeps: its input hidden states."""
    return st.tokens * arch.hidden_size * st.stream_bytes


def checkpoint_reused(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes of a recomputed layer's saved tensors that are its checkpoint itself, not a copy: the
    first norm's saved input where the norm keeps the tensor it gets (LayerNorm always; Llama's
    RMSNorm where ``hidden_states.to(torch.float32)`` is a no-op, an fp32 stream as QLoRA's). A
    post-norm layer (OLMo 2) hands its input to the projections first: not counted."""
    if arch.post_norm:
        return 0.0
    norm = arch.layer_norms[0]
    if norm.kind == "layernorm" or st.stream_bytes == FP32_BYTES:
        return checkpoint_saved(arch, st)
    return 0.0


def frozen_input_unsaved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What the bottom layer's first norm does not keep under LoRA and QLoRA: the token embedding
    is frozen, so the layer's input needs no gradient, and with the norm's weight frozen too
    autograd records nothing for it (no tensor of the op requires grad); nor does the adapter
    dropout behind it. A post-norm layer (OLMo 2) reads its input with the projections first:
    nothing to take away. Under a parallel residual (GPT-NeoX, Falcon) the MLP branch reads that
    input too: without an adapter on the MLP, nothing of it needs a gradient, and it keeps nothing."""
    if st.full or st.gradient_checkpointing or arch.post_norm or not arch.layer_norms:
        return 0.0  # under checkpointing the embedding's output requires grad (:func:`embedding_leaf_held`)
    return norm_saved(arch, st) + _frozen_input_dropout_masks(arch, st) + _frozen_parallel_mlp(arch, st)


def _frozen_parallel_mlp(arch: ArchSpec, st: ActivationSetting) -> float:
    """The bottom layer's MLP branch under a parallel residual, where no adapter sits on the MLP:
    everything it would keep (:func:`mlp_half_saved`)."""
    mlp = [m for m in arch.layer_linears if m.role in ("mlp_in", "mlp_out")]
    if not arch.parallel_residual or any(m.name in st.lora_targets for m in mlp) or st.wrapped_targets:
        return 0.0
    return mlp_half_saved(arch, st)


def embedding_leaf(st: ActivationSetting) -> bool:
    """Whether the input embedding's output is a graph leaf that requires grad: under checkpointing
    with LoRA or QLoRA, transformers and peft hook the input embedding (``enable_input_require_grads``:
    ``output.requires_grad_(True)``, one hook with QLoRA, two with LoRA, as measured)."""
    return st.gradient_checkpointing and not st.full


def embedding_leaf_held(arch: ArchSpec, st: ActivationSetting) -> float:
    """The :func:`embedding_leaf`, held until backward is done. Where the model makes the layers'
    input from it by a new tensor (Granite's multiplier, GPT-2's and OPT's position sum), it is a
    ``t x embedding_dim`` tensor of its own; else it is layer 0's checkpoint."""
    if not embedding_leaf(st) or not (arch.embeddings_rescaled or arch.position_embeddings):
        return 0.0
    return st.tokens * arch.embedding_dim * st.stream_bytes


def _frozen_input_dropout_masks(arch: ArchSpec, st: ActivationSetting) -> float:
    """The adapter dropout on the bottom layer's attention inputs keeps no mask either: its input
    needs no gradient (the dropped input itself LoRA's A still keeps; VeRA's frozen A does not)."""
    if st.lora_dropout <= 0:
        return 0.0
    adapted = [m for m in arch.layer_linears if INPUT_GROUPS.get(m.role) == "attn_in" and m.name in st.lora_targets]
    return len(adapted) * st.tokens * arch.hidden_size * dropout_mask_bytes(st, st.adapter_bytes)


def layers_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes all decoder layers keep at the end of the forward pass, kind by kind of layer; with
    checkpointing, each layer's input, and the attention masks, which the checkpoints hold for
    their recomputation until backward is done."""
    if st.gradient_checkpointing:
        return (arch.num_hidden_layers * checkpoint_saved(arch, st) + attention_masks(arch, st)
                + embedding_leaf_held(arch, st))
    bottom, bottom_st = layer_at(arch, st, 0)
    return (sum(n * layer_saved(kind, kind_st) for kind, kind_st, n in layer_kinds(arch, st))
            - frozen_input_unsaved(bottom, bottom_st))


def head_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Final norm, the inputs of the Linears outside the layers (OPT's project_in and project_out)
    and the lm_head input (``embedding_dim`` wide; kept only when lm_head trains)."""
    final = norm_saved(arch, st) if arch.final_norm else 0.0
    projections = linear_inputs_saved(arch, st, arch.model_linears)
    lm_head = head_weight_copy(arch, st) + (st.tokens * arch.embedding_dim * st.stream_bytes if st.full else 0.0)
    if st.loss == "chunked":
        lm_head = 0.0  # lm_head never runs as a Linear: the fused head keeps its own (chunked_loss.saved)
    return final + projections + lm_head + embedding_dropout_saved(arch, st)


def logits_forward(arch: ArchSpec, st: ActivationSetting) -> float:
    """Logits held by the model output plus the fp32 ``log_softmax`` the loss keeps (and what
    soft-capping keeps, :func:`logit_softcap_saved`)."""
    t, V = st.tokens, arch.vocab_size
    return t * V * (st.logits_bytes + FP32_BYTES) + logit_softcap_saved(arch, st)


def logit_softcap_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Gemma 2's final soft-capping, ``tanh(logits / c) * c`` (``final_logit_softcapping``): the
    ``tanh`` keeps its output, ``t·V`` in the logits' dtype, until backward reaches it."""
    if not arch.final_logit_softcapping:
        return 0.0
    return st.tokens * arch.vocab_size * st.logits_bytes


def logits_upcast_transient(arch: ArchSpec, st: ActivationSetting) -> float:
    """The fp32 copy ``logits.float()`` makes inside the loss (freed after ``log_softmax``)."""
    if st.logits_bytes == FP32_BYTES:
        return 0.0
    return st.tokens * arch.vocab_size * FP32_BYTES


def logits_backward_peak(arch: ArchSpec, st: ActivationSetting) -> float:
    """At ``log_softmax`` backward: the saved fp32 log-probs, the incoming gradient from
    ``nll_loss`` and the outgoing one, ``t·V`` fp32 each. The logits themselves are gone: the
    loop keeps only ``loss``, and neither ``.float()`` nor ``log_softmax`` saves its input."""
    t, V = st.tokens, arch.vocab_size
    return t * V * 3 * FP32_BYTES + logit_softcap_saved(arch, st)


def loop_output_held(arch: ArchSpec, st: ActivationSetting) -> float:
    """What a plain loop's ``outputs`` holds beyond the loss: the logits, ``t·V`` in the dtype
    ``lm_head`` emits (after soft-capping, its own tensor), or under autocast in fp32 (accelerate
    converts a mixed-precision forward's outputs to fp32: ``convert_outputs_to_fp32``).
    ``outputs = model(**batch)`` keeps this step's through backward and the optimizer step, and
    the previous step's through the next forward, until that forward returns and the name is
    rebound. A trainer keeps only the loss (0)."""
    if st.loop != "plain":
        return 0.0
    if st.loss == "chunked":
        return chunked_loss.output_held(st)
    return st.tokens * arch.vocab_size * (FP32_BYTES if st.autocast_bytes else st.logits_bytes)


def loss_held(st: ActivationSetting, phase: str) -> float:
    """The fp32 scalar loss the loop holds: through backward in every loop (``loss.backward()``);
    a plain loop's ``outputs`` also through the optimizer step and the next forward."""
    return FP32_BYTES if phase == "backward" or st.loop == "plain" else 0.0


def loop_graph_held(arch: ArchSpec, st: ActivationSetting) -> float:
    """What the graph of a plain loop's held output keeps after its backward: the
    :func:`embedding_leaf` and the ``.grad`` backward gave it, ``t x embedding_dim`` each, alive
    through the optimizer step and the next forward (backward frees every saved tensor, not the
    leaf its nodes reach; measured on CPU)."""
    if st.loop != "plain" or not embedding_leaf(st):
        return 0.0
    return 2 * st.tokens * arch.embedding_dim * st.stream_bytes


def attention_backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Transient gradients in eager attention's backward at ``softmax``'s backward, per ``b·n·s²``
    element, beyond what the layer saved: with the saved fp32 softmax, three fp32 ``s×s`` tensors
    are alive; so in sdpa's math path on a CPU (multi-head latent attention), whose softmax is
    fp32. Fused kernels keep no ``s×s`` gradient (0)."""
    if _mla_math_path(arch, st) or _broadcast_kv_math_path(arch, st):
        return st.batch * arch.num_attention_heads * st.seq * st.seq * 2 * FP32_BYTES
    if st.attn != "eager":
        return 0.0
    a = attention_bytes(st)
    # the gradient's fp32 copy and softmax's backward output; the 16-bit cast of the probabilities
    # (counted in the layer's saved tensors) was consumed by the matmul's backward just before
    per_element = 2 * FP32_BYTES - (a if a != FP32_BYTES else 0)
    return st.batch * arch.num_attention_heads * st.seq * st.seq * per_element


def _broadcast_kv_math_path(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether sdpa runs its math path because k and v reach it with fewer heads than q (Falcon
    passes them unrepeated, without ``enable_gqa``): on a CPU no fused kernel broadcasts heads."""
    return st.attn == "sdpa" and st.device == "cpu" and not arch.repeats_kv and arch.kv_dim < arch.q_dim


def _broadcast_math_prefill(arch: ArchSpec, st: ActivationSetting) -> float:
    """sdpa's math path without autograd (torch 2.13, ``_scaled_dot_product_attention_math``) at
    the mask's add, for k and v of their own head count: fp32 copies of 16-bit q, k and v, the
    scaled q (the scaled k is gone after the product), the boolean mask made additive in the
    inputs' dtype (``(b, 1, s, s)``), and the fp32 scores with their masked copy."""
    t, a = st.tokens, st.stream_bytes
    copies = t * (arch.q_dim + 2 * arch.kv_dim) * FP32_BYTES if a != FP32_BYTES else 0.0
    scaled_q = t * arch.q_dim * FP32_BYTES
    mask = st.batch * st.seq * st.seq * a if sdpa_masked(arch, st) else 0.0
    scores = 2 * st.batch * arch.num_attention_heads * st.seq * st.seq * FP32_BYTES
    return copies + scaled_q + mask + scores


def _mla_math_path(arch: ArchSpec, st: ActivationSetting) -> bool:
    """Whether sdpa runs its math path for multi-head latent attention: on a CPU no fused kernel
    takes v narrower than q and k."""
    return arch.mla is not None and st.attn == "sdpa" and st.device == "cpu"


def _math_path_prefill(arch: ArchSpec, st: ActivationSetting) -> float:
    """sdpa's math path without autograd (torch 2.13, ``_scaled_dot_product_attention_math``), in
    ``b·n·s`` fp32 rows: 16-bit q, k and v copied to fp32 (their own tensors when already fp32 are
    the inputs), q and k scaled into new tensors, then the ``s``-wide scores and their masked copy
    (at the mask's add and the softmax); at the product with v, the fp32 softmax, its 16-bit copy
    (the weights it returns) and the fp32 output."""
    assert arch.mla is not None
    qk, v, s = arch.mla.qk_head_dim, arch.mla.v_head_dim, st.seq
    copies = qk + qk + v if st.stream_bytes != FP32_BYTES else 0
    inputs = copies + 2 * qk
    half = st.stream_bytes / FP32_BYTES if st.stream_bytes != FP32_BYTES else 0
    rows = st.batch * arch.num_attention_heads * s
    return rows * (inputs + max(2 * s, (1 + half) * s + v)) * FP32_BYTES


def dequant_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Inside a 4-bit Linear's backward: its weight dequantized to the compute dtype, next to the
    incoming gradient and the input gradient it produces (``t`` rows of the widest side)."""
    if not st.dequant_bytes:
        return 0.0
    widest = max(arch.hidden_size, arch.intermediate_size)
    return st.dequant_bytes + 2 * st.tokens * widest * st.stream_bytes


def mlp_half_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """What a layer saved for its MLP half (its norm, the MLP Linears' inputs, the MLP's own
    tensors, experts): consumed by the time backward reaches the layer's attention."""
    mlp_linears = tuple(m for m in arch.layer_linears if m.role in ("mlp_in", "mlp_out"))
    norm = norm_saved(arch, st) - parallel_norms_share_input(arch, st) if len(arch.layer_norms) > 1 else 0.0
    return (norm + linear_inputs_saved(arch, st, mlp_linears) + mlp_saved(arch, st)
            + expert_inputs_saved(arch, st) + param_wrapper_saved(arch, st))


def embedding_grad_bytes(arch: ArchSpec, st: ActivationSetting) -> float:
    """Gradients of what runs before the first layer (the embedding tables, OPT's project_in) when
    they train: the last to be produced. A tied token table already holds lm_head's gradient, so
    it adds none."""
    if not st.full:
        return 0.0
    tokens = 0 if arch.tie_word_embeddings else arch.params_of("embedding")
    project_in = sum(m.weight_params for m in arch.model_linears if m.role == "proj_in")
    return (arch.params_of("position") + tokens + project_in) * st.stream_bytes


def embedding_backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """At the input embedding's backward, the last: the gradient of its output, ``t x
    embedding_dim`` in the stream's dtype."""
    return st.tokens * arch.embedding_dim * st.stream_bytes


def tied_embedding_grad_transient(arch: ArchSpec, st: ActivationSetting) -> float:
    """A trained tied embedding gets two gradients, from ``lm_head`` (early in backward) and from
    the embedding lookup (last); the autograd engine holds the first, receives the second and
    adds them out of place: two ``V·e`` tensors (``e = embedding_dim``) beyond the one that
    becomes ``.grad``."""
    if not (st.full and arch.tie_word_embeddings):
        return 0.0
    return 2 * arch.params_of("embedding") * st.stream_bytes


def head_weight_grad(arch: ArchSpec, st: ActivationSetting) -> float:
    """The gradient of a trained ``lm_head`` weight (``V x embedding_dim``): under accumulation a
    transient until autograd adds it into ``.grad``; a tied table's lm_head half
    (:func:`tied_head_grad_pending`)."""
    if not st.full:
        return 0.0
    return arch.vocab_size * arch.embedding_dim * st.stream_bytes


def tied_head_grad_pending(arch: ArchSpec, st: ActivationSetting) -> float:
    """A trained tied table's gradient from ``lm_head``, held by the autograd engine from
    lm_head's backward until the embedding lookup's arrives (the two are summed, then given to
    ``AccumulateGrad``): next to the table's ``.grad`` when gradients accumulate."""
    if not (st.full and arch.tie_word_embeddings):
        return 0.0
    return head_weight_grad(arch, st)


def head_backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """In ``lm_head``'s backward: the incoming gradient of the logits, in their dtype (the fp32
    one of the loss is freed by the cast's backward), and the gradient of its input."""
    return st.tokens * (arch.vocab_size * st.logits_bytes + arch.embedding_dim * st.stream_bytes)


def backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Transient gradients inside one layer's backward: the MLP intermediate grads dominate."""
    t, i, a = st.tokens, arch.expert_width, st.stream_bytes
    routed = max(routed_rows(arch), 1)
    wrapped_grad = _wrapped_grad_peak(arch, st)
    # Granite: the gradient of ``output * residual_multiplier``, a copy next to the incoming one
    scaled = 1 if arch.residual_scaled else 0
    if arch.expert_dispatch == "all":
        return all_experts_backward_working(arch, st) + t * (2 + scaled) * arch.hidden_size * a
    return t * (2 * routed * i + (2 + scaled) * arch.hidden_size) * a + wrapped_grad


def _wrapped_grad_peak(arch: ArchSpec, st: ActivationSetting) -> float:
    """The largest ``dL/dW'`` of a ParamWrapper-adapted parameter net of what backward has freed by
    then: it meets the stacked parameters in reverse (``down_proj``, then ``gate_up_proj``, then
    the router), and each one's adapted copy ``W'`` (as large as its gradient) is released once
    its backward has run."""
    peak, released = 0.0, 0.0
    for p in reversed(_wrapped(arch, st)):
        grad = p.weight_params * st.stream_bytes
        peak = max(peak, grad - released)
        released += grad
    return peak


def all_experts_backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Gradients alive at once in Llama 4's MoE backward beyond what the layer saved and has not
    used up yet, in ``E·t`` rows (``Llama4TextExperts.forward``: ``bmm(up * act(gate), down)``):
    at ``up * act(gate)``'s backward, the product's gradient and the two it makes (``3i``); at the
    split of ``gate_up``, the gate's and up's gradients and their concatenation (``4i``), with
    ``gate_up`` and the activation's output (``3i``) used up; at the first expert matmul, that
    concatenation and the weighted copies' gradient (``2i + h``); at the weighting multiply, that
    gradient and the two it makes (``3h``). Where the experts train, their matmuls saved the
    product (``i``) and the weighted copies (``h``), used up by then too."""
    rows, h, i = st.tokens * arch.num_local_experts, arch.hidden_size, arch.expert_width
    product, copies = (i, h) if st.full else (0, 0)
    used_up = 3 * i + product  # gate_up (2i) and the activation's output, and the product
    return rows * max(3 * i - product, 4 * i - used_up, 2 * i + h - used_up, 3 * h - used_up - copies) * st.stream_bytes


def all_experts_recompute_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Under checkpointing, Llama 4's MoE block recomputed inside backward, at its down projection,
    in ``E·t`` rows beyond what the layer saves: the weighted copies of the tokens and the product
    ``up * act(gate)`` (locals of the forward, kept for backward only where the experts train), the
    experts' output (``h``), and next to them the gradient of that output, which backward has
    already made by expanding the gradient of its sum over the experts (``h``); 0 for other layers."""
    if arch.expert_dispatch != "all" or not st.gradient_checkpointing:
        return 0.0
    h, i = arch.hidden_size, arch.expert_width
    locals_ = 0 if st.full else h + i
    return st.tokens * arch.num_local_experts * (locals_ + 2 * h) * st.stream_bytes


def _fused_qkv(arch: ArchSpec) -> LinearSpec | None:
    return next((m for m in arch.layer_linears if m.role == "qkv"), None)


def kv_cache(arch: ArchSpec, st: ActivationSetting, bits: int) -> float:
    """The KV cache after a prefill of ``t = b·s`` tokens (GQA-aware: ``kv_dim`` per token).

    transformers 5.23's DynamicCache (``cache_utils.DynamicLayer.update``) concatenates each
    layer's k and v onto empty tensors: copies of their own, ``2·t·kv_dim`` per layer, even where k
    and v are views of a fused qkv projection's output (which the cache then does not keep).
    """
    t, w = st.tokens, bits / 8
    if arch.mla is not None:
        # the latents: ``kv_lora_rank`` normalized and ``qk_rope_head_dim`` rotated, shared by the heads
        return arch.num_hidden_layers * t * (arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim) * w
    return arch.num_hidden_layers * 2 * t * arch.kv_dim * w


def decode_moments(arch: ArchSpec, st: ActivationSetting, bits: int, new_tokens: int
                   ) -> tuple[tuple[float, dict[str, float]], ...]:
    """``generate()`` decoding ``N`` tokens after the prefill (transformers 5.23 ``GenerationMixin._sample``,
    greedy, no logits processor): its last forward runs with the cache at ``s + N - 1`` positions, as
    (KV cache bytes, other terms):
    - at the cache's last concatenation (``DynamicLayer.update``: ``torch.cat`` onto the layer's
      tensor): the grown cache and the top layer's old v, ``b·(s+N-2)·kv_dim``, with the previous
      step's fp32 next-token logits (``b·V``) still bound;
    - at the step's logits: its output logits (``b·V`` in lm_head's dtype), the fp32 copy
      ``outputs.logits[:, -1].to(dtype=float32)`` and (after the first token) the previous step's,
      still bound until the name is rebound;
    and throughout, the grown ``input_ids`` and attention mask (int64, ``b·(s+N-1)`` each). With
    ``N = 1``, the prefill's logits giving the first token: only the logits moment, at ``s``
    positions (the prefill's own last moment when any token is generated)."""
    b, V, a = st.batch, arch.vocab_size, st.logits_bytes
    length = st.seq + new_tokens - 1
    kv_end = kv_cache(arch, replace(st, seq=length), bits)
    ids = 2 * b * length * INDEX_BYTES
    copies = 1 if new_tokens == 1 else 2  # the first token has no previous step's copy beside it
    logits = (kv_end, {"logits_bytes": b * V * (a + copies * FP32_BYTES), "working_bytes": ids})
    if new_tokens == 1:
        return (logits,)
    old_value = b * (length - 1) * arch.kv_dim * bits / 8
    return ((kv_end, {"logits_bytes": b * V * FP32_BYTES, "working_bytes": ids + old_value}), logits)


def inference_mlp_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """No-grad prefill transient inside the MLP, in ``t·i`` tensors: gated, the activation output,
    the up projection and their product (with a fused gate_up projection, its whole output and
    the activation's and the product); plain, the projection and the activation's outputs (a
    composite activation keeps several partial results alive at once)."""
    t, a, i = st.tokens, st.stream_bytes, arch.expert_width
    held = eager_weights_returned(arch, st)
    if arch.expert_dispatch == "all":
        return _all_experts_prefill(arch, st) + held + _prefill_stream(arch, st, in_mlp=True)
    if arch.num_local_experts:
        # transformers' grouped_mm experts, at the gate: the t·k routed rows gathered (h wide), the
        # fused gate_up output (2i, alive while its halves are used), the activation and the product;
        # gpt-oss: its gathered gate_up biases (2i) and, at ``(up + 1) * glu``, the clamped gate and
        # up, the gated half, ``up + 1`` and the product (i each)
        widths = 9 * i if arch.expert_gate == "clamped_swiglu" else 4 * i
        rows, h = t * arch.num_experts_per_tok, arch.hidden_size
        gate = rows * (h + widths) * a
        # after the down projection: the gathered rows and the experts' output (h wide each), the
        # output times its routing weight (fp32 where the weights are) and its un-permuted copy
        weighted = FP32_BYTES if arch.routing_weights_fp32 else a
        unpermute = rows * h * (2 * a + 2 * weighted)
        return max(gate, unpermute) + held + _prefill_stream(arch, st, in_mlp=True)
    tensors = 3 if arch.gated_mlp else 1 + COMPOSITE_ACT_TRANSIENT.get(arch.hidden_act, 1)
    if any(m.role == "mlp_in" and m.out_features == 2 * i for m in arch.layer_linears):
        tensors = 4  # Phi-3's fused gate_up output stays whole (2i) while its halves are in use
    mlp = t * tensors * i * a
    return mlp + held + _prefill_stream(arch, st, in_mlp=True)


def _all_experts_prefill(arch: ArchSpec, st: ActivationSetting) -> float:
    """Llama 4's MoE block without autograd, in ``E·t`` rows: the router's logits and scores
    (``t·E`` each) are alive throughout, with the weighted copies of the tokens (``h``) and, at
    the gate, the fused ``gate_up`` output (``2i``), the activation and the product (``i`` each);
    at the down projection, ``gate_up``, the product and the output (``h``)."""
    rows, h, i, a = st.tokens * arch.num_local_experts, arch.hidden_size, arch.expert_width, st.stream_bytes
    router = 2 * rows * a
    return router + rows * (h + max(4 * i, 3 * i + h)) * a


def attention_masks(arch: ArchSpec, st: ActivationSetting) -> float:
    """The masks transformers makes once per forward (``masking_utils``), one per kind of layer
    (full, sliding, chunked), alive until the decoder stack returns (under checkpointing, until
    backward is done): eager attention's additive ``(b, 1, s, s)`` masks in the stream's dtype;
    for sdpa, the bool mask of each window the sequence reaches (``sdpa_mask``; otherwise
    ``is_causal`` and no mask, but where the family asks for one, Falcon), ``(1, 1, s, s)``
    expanded over the batch for a full or sliding window, ``(b, 1, s, s)`` for Llama 4's
    chunks (their mask function reads each row's left padding)."""
    area = st.seq * st.seq
    if st.attn == "eager":
        kinds = len(set(arch.layer_windows)) or 1
        return kinds * st.batch * area * st.stream_bytes
    if st.attn != "sdpa":
        return 0.0
    reached = {w for w in arch.layer_windows if 0 < w <= st.seq}
    rows = sum(st.batch if w == arch.attention_chunk_size else 1 for w in reached)
    if arch.mask_materialized:
        rows += 1  # the full causal mask, ``(1, 1, s, s)`` expanded over the batch
    return rows * area * MASK_BYTES


def eager_weights_returned(arch: ArchSpec, st: ActivationSetting) -> float:
    """Eager attention returns its weights (the softmax output in the stream's dtype; gpt-oss's
    with the sink column) and every decoder layer holds them in a local it ignores
    (``hidden_states, _ = self.self_attn(...)``) until it returns: through the layer's MLP.
    sdpa and flash kernels return none."""
    if st.attn != "eager":
        return 0.0
    columns = st.seq + 1 if arch.attention_sinks else st.seq
    return st.batch * arch.num_attention_heads * st.seq * columns * st.stream_bytes


def inference_attention_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """No-grad prefill transient inside attention: the query, and for eager attention the
    ``repeat_kv`` copies of k and v under GQA and, per ``b·n·s²`` element, the masked scores,
    their fp32 copy (``softmax(dtype=float32)`` upcasts first) and the fp32 softmax, alive
    together inside ``softmax`` (in fp32 the copy is the scores themselves). sdpa / flash kernels
    never materialize the matrix."""
    b, s, t, a = st.batch, st.seq, st.tokens, st.stream_bytes
    # q (after RoPE a new tensor); k and v are the cache's copies by then (attention rebinds them to
    # what the cache returns), but a fused projection's output stays whole, held by its q view or
    # the family's own local of it
    fused = _fused_qkv(arch)
    query = t * arch.q_dim * a
    if fused is not None:
        query = t * fused.out_features * a + (query if arch.rotary_dim else 0.0)
    if arch.mla is not None:
        # q (concatenated), k (assembled) and kv_b_proj's output (k's first part and v are views);
        # locals alive through the attention call: q_b_proj's (or q_proj's) output, the rotated part
        # of q, and kv_a_proj_with_mqa's output (the latent and the rotated key are views of it)
        mla, n = arch.mla, arch.num_attention_heads
        query = t * n * (3 * mla.qk_head_dim + mla.qk_nope_head_dim + mla.v_head_dim + mla.qk_rope_head_dim) * a
        query += t * (mla.kv_lora_rank + mla.qk_rope_head_dim) * a
        if _mla_math_path(arch, st):
            return query + _math_path_prefill(arch, st) + _prefill_stream(arch, st, in_mlp=False)
    if _broadcast_kv_math_path(arch, st):
        return query + _broadcast_math_prefill(arch, st) + _prefill_stream(arch, st, in_mlp=False)
    if st.attn != "eager":
        return query + _prefill_stream(arch, st, in_mlp=False)
    # masked scores + softmax output, plus the fp32 copy a float32 softmax makes of 16-bit scores
    per_element = a + FP32_BYTES + (FP32_BYTES if a != FP32_BYTES else 0) if arch.softmax_fp32 else 2 * a
    scores = b * arch.num_attention_heads * s * s * per_element
    if arch.attention_sinks:
        # gpt-oss: the masked scores, the max-subtracted scores with the sink column, and their
        # softmax, all in the stream's dtype
        scores = b * arch.num_attention_heads * s * (s + (s + 1) * 2) * a
    grouped = arch.num_key_value_heads < arch.num_attention_heads and arch.repeats_kv
    repeated = 2 * t * arch.q_dim * a if grouped else 0.0  # repeat_kv
    if arch.mla is not None:
        repeated = 0.0
    return query + repeated + scores + _prefill_stream(arch, st, in_mlp=False)


def reference_forward_working(arch: ArchSpec, st: ActivationSetting) -> tuple[float, ...]:
    """DPO's reference forward (TRL 1.16 ``DPOTrainer._compute_loss``: under ``no_grad``, the same
    model with its adapters disabled, or for full fine-tuning a separate frozen copy), at its
    widest moments: inside the top layer's MLP (a 4-bit weight dequantized beside it) and its
    attention, with the masks the layers share, and in the fused head, asked for the policy's
    outputs or, on the separate copy, the default ``log_probs`` only."""
    top, top_st = layer_at(arch, st, -1)
    masks = attention_masks(arch, st)
    outputs = chunked_loss.REFERENCE_OUTPUTS if st.full else chunked_loss.policy_outputs(st)
    return (inference_mlp_working(top, top_st) + st.dequant_bytes + masks,
            inference_attention_working(top, top_st) + masks,
            chunked_loss.forward_working(arch, st, outputs))


def evaluation_head_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """A no-grad forward with labels, at its loss (transformers 5.23 ``ForCausalLMLoss``): every
    position's logits in lm_head's dtype, their fp32 copy (``logits.float()``, none when they are
    fp32) and ``cross_entropy``'s fp32 log-softmax, ``t·V`` each; the labels padded by one position
    and their shifted contiguous copy (int64), and the fp32 loss with its total weight."""
    t, V = st.tokens, arch.vocab_size
    upcast = FP32_BYTES if st.logits_bytes != FP32_BYTES else 0
    labels = (2 * t + st.batch) * INDEX_BYTES + 2 * FP32_BYTES
    return t * V * (st.logits_bytes + upcast + FP32_BYTES) + labels


def evaluation_stream(arch: ArchSpec, st: ActivationSetting) -> float:
    """``t·h`` alive at an evaluation forward's loss: the model output's last hidden state."""
    return st.tokens * arch.hidden_size * st.stream_bytes


def inference_head_stream(arch: ArchSpec, st: ActivationSetting) -> float:
    """``t·h`` tensors alive when ``lm_head`` runs: the embedding output, the last layer's output
    and its final norm."""
    return 3 * st.tokens * arch.hidden_size * st.stream_bytes


def _prefill_stream(arch: ArchSpec, st: ActivationSetting, in_mlp: bool) -> float:
    """``t·h`` tensors alive inside a layer of a no-grad forward: the embedding output (the model
    keeps ``inputs_embeds`` to the end), the layer's input (the model's loop variable), the
    normalized input and, in the MLP, the residual after attention; plus RoPE's cos and sin, one
    pair per rotary table (Gemma 3: sliding and full layers rotate with different bases)."""
    t, a = st.tokens, st.stream_bytes
    # a post-norm layer (OLMo 2) reads its input itself: no normalized copy beside it; Llama 4's
    # keeps attention's output through the MLP; OPT's inline MLP lets the normalized input go
    tensors = (4 if in_mlp else 3) - (1 if arch.post_norm else 0) + (1 if in_mlp and arch.attention_output_held else 0)
    tensors -= 1 if in_mlp and arch.mlp_inline else 0
    return tensors * t * arch.hidden_size * a + rotary_table_bytes(arch, st) + learned_positions_held(arch, st)


def learned_positions_held(arch: ArchSpec, st: ActivationSetting) -> float:
    """A learned position table's output, a local of the model's forward until the decoder stack
    returns: GPT-2's ``position_embeds = self.wpe(position_ids)`` of ``(1, s, h)`` (one row of
    positions, ``arange(s).unsqueeze(0)``); OPT's ``pos_embeds`` of ``(b, s, h)`` (positions from
    each row's attention mask, ``cumsum``) (transformers 5.23 ``modeling_gpt2`` / ``modeling_opt``)."""
    if not arch.position_embeddings:
        return 0.0
    rows = st.tokens if arch.position_ids_per_row else st.seq
    return rows * arch.hidden_size * st.stream_bytes


def rotary_table_bytes(arch: ArchSpec, st: ActivationSetting) -> float:
    """RoPE's tables, made once per forward: cos and sin per rotary table, in the stream's dtype;
    Llama 4's one complex64 ``freqs_cis`` of ``(1, s, rotary_dim / 2)`` (its positions are one row)."""
    if arch.rope_complex:
        return st.seq * arch.rotary_dim / 2 * 2 * FP32_BYTES
    return arch.rotary_tables * 2 * st.tokens * arch.rotary_dim * st.stream_bytes
