"""``estimate(request) -> Estimate``: phases of a step, the peak, and the breakdown at the peak.

A training run is modelled in its steady state (step two onwards, what a run of N steps peaks
at): optimizer state exists through forward and backward, gradients are freed by
``zero_grad(set_to_none=True)`` before the next forward. The peak is the max over phases,
never a blind sum of terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

from . import activations as act
from . import chunked_loss
from .adapters import LoraSpec, adapter_params, resolve_targets
from .arch import ArchSpec, LinearSpec, ParamTarget
from .errors import EstimateError
from .memory import (
    OptimizerBytes,
    WeightBytes,
    gradient_bytes,
    optimizer_bytes,
    stepped_tensors,
    trainable_params,
    trainable_tensors,
    weight_bytes,
)
from .paper import PaperFigure, lora_ratio, nf4_constant_bits, paper_figure
from .peft_defaults import default_targets_note
from .phase import Phase
from .quant import QuantSpec
from .recipes import RECIPES
from .request import (
    AdapterDtype,
    AttnImplementation,
    Autocast,
    Device,
    EstimateRequest,
    InferenceMode,
    Loop,
    Loss,
    Method,
    Objective,
    Optimizer,
    Sharding,
    default_attention,
    default_checkpointing,
    default_quant,
    normalize,
)
from .setting import ActivationSetting
from .shape import ShapePolynomial, fit
from .sharding import shard_phase
from .stored_quant import stored_quant, unread_quantization
from .units import DTYPE_BITS, FP32_BITS, MIB

ESTIMATOR_VERSION = "0.1.0"
# CUDA context (driver state, kernels, cuBLAS/cuDNN handles) sits outside PyTorch's allocator.
# Placeholder of the commonly observed order (300-600 MiB with lazy module loading) until the
# GPU validation matrix measures NVML minus reserved; named so it can be replaced, never fitted.
CUDA_CONTEXT_BYTES = 512 * MIB
# Caching-allocator slack (reserved - allocated) as a fraction of the allocated peak; placeholder
# pending GPU measurements (torch.cuda.max_memory_reserved vs max_memory_allocated).
ALLOCATOR_SLACK_FRACTION = 0.05

TERMS = (
    "weights_bytes",
    "quantized_weights_bytes",
    "quant_constants_bytes",
    "adapter_bytes",
    "gradients_bytes",
    "optimizer_bytes",
    "optimizer_step_temp_bytes",
    "activations_bytes",
    "logits_bytes",
    "kv_cache_bytes",
    "working_bytes",
)
RUNTIME_TERMS = ("cuda_context_bytes", "allocator_slack_bytes")
# The most bytes a plan may need: 2^63 - 1 (8 EiB), what a signed 64-bit integer holds, and with it
# every count in a document (orjson writes at most 64-bit integers), SQLite's INTEGER, bigint.
MAX_PLAN_BYTES = 2**63 - 1


@dataclass(frozen=True)
class Estimate:
    """The answer: parameter counts, the paper figure, the phases and the peak."""

    request: EstimateRequest
    arch: ArchSpec
    total_params: int
    trainable_params: int
    adapter_params: int
    paper: PaperFigure
    lora_ratio: float | None
    nf4_constant_bits: float | None
    phases: tuple[Phase, ...]  # the worst moment of each phase, in order
    moment_bytes: tuple[int, ...]  # allocated bytes of every candidate moment (each exactly polynomial in b and s)
    peak_phase: str
    breakdown: dict[str, int]
    peak_allocated_bytes: int
    peak_bytes: int
    paged_optimizer_bytes: int
    assumptions: tuple[str, ...] = field(default=())
    estimator_version: str = ESTIMATOR_VERSION

    @property
    def trainable_percent(self) -> float:
        """peft's ``print_trainable_parameters`` percentage (adapters included in the total)."""
        return 100.0 * self.trainable_params / (self.total_params + self.adapter_params)


_NO_TERMS = dict.fromkeys(TERMS, 0)


def _terms(weights: dict[str, int], **values: float) -> dict[str, int]:
    """Every term in order: the weights, then ``values`` rounded up to whole bytes, else 0."""
    terms = {**_NO_TERMS, **weights}
    for key, value in values.items():
        terms[key] = math.ceil(value)
    return terms


def _weight_terms(w: WeightBytes) -> dict[str, int]:
    return {
        "weights_bytes": w.plain_bytes,
        "quantized_weights_bytes": w.quantized_bytes,
        "quant_constants_bytes": w.constant_bytes,
        "adapter_bytes": w.adapter_bytes,
    }


def activation_setting(req: EstimateRequest, arch: ArchSpec) -> ActivationSetting:
    """The activation-relevant facts of a normalized request."""
    assert req.attn_implementation is not None and req.gradient_checkpointing is not None, "normalize() first"
    assert req.loss is not None and req.adapter_dtype is not None, "normalize() first"
    qlora_fp32 = req.method == "qlora" and req.prepare_kbit
    stream_bits = FP32_BITS if qlora_fp32 else DTYPE_BITS[req.dtype]
    autocast_bits = DTYPE_BITS[req.autocast] if req.autocast != "none" and req.method != "inference" else 0
    targets: tuple[str, ...] = ()
    wrapped: tuple[str, ...] = ()
    if req.method in ("lora", "qlora"):
        resolved = resolve_targets(arch, req.lora)
        targets = tuple(dict.fromkeys(m.name for m, _ in resolved if isinstance(m, LinearSpec)))
        wrapped = tuple(dict.fromkeys(m.name for m, _ in resolved if isinstance(m, ParamTarget)))
    return ActivationSetting(
        batch=req.batch_size,
        seq=req.seq_len,
        stream_bytes=stream_bits / 8,
        # lm_head emits its weight's dtype, or under autocast autocast's
        logits_bytes=(autocast_bits or stream_bits) / 8,
        autocast_bytes=autocast_bits / 8,
        quantized=bool(req.quant and req.quant.enabled),
        loss=req.loss,
        objective=req.objective,
        adapter_bytes=DTYPE_BITS[req.adapter_dtype] / 8,
        full=req.method == "full",
        lora_targets=targets,
        wrapped_targets=wrapped,
        lora_r=req.lora.r,
        lora_dropout=req.lora.dropout,
        lora_variant=req.lora.variant,
        loop=req.loop,
        attn=req.attn_implementation,
        device=req.device,
        gradient_checkpointing=req.gradient_checkpointing,
        dequant_bytes=_dequant_bytes(arch, req),
        window=arch.layer_windows[-1] if arch.num_hidden_layers else 0,  # the top layer's
        rope=arch.layer_rope[-1] if arch.num_hidden_layers else True,
    )


def _dequant_bytes(arch: ArchSpec, req: EstimateRequest) -> float:
    """The largest weight a 4-bit Linear dequantizes (to the compute dtype) for one matmul."""
    if not (req.quant and req.quant.is_4bit):
        return 0.0
    return _largest_quantized(arch) * DTYPE_BITS[req.dtype] / 8


@lru_cache(maxsize=256)
def _largest_quantized(arch: ArchSpec) -> int:
    return max((t.numel for t in arch.param_tensors() if t.quantizable), default=0)


def training_phases(arch: ArchSpec, st: ActivationSetting, w: WeightBytes, grads: int, layer_grads: LayerGrads,
                    opt: OptimizerBytes, accumulates: bool = False) -> tuple[Phase, ...]:
    """Candidate moments of a step, steady state: load; forward end (and, for checkpointed eager
    attention, inside a layer's softmax); backward at the loss, then in the top and the bottom
    layer during the MLP's and during attention's backward, and for a trained tied embedding the
    sum of its two gradients; optimizer step.

    Optimizer state lives through forward and backward; a plain loop's output holds its logits
    throughout (:func:`act.loop_output_held`). With gradient accumulation (``accumulates``), a
    micro-step after the first runs its forward and backward with every ``.grad`` of the ones
    before already there, the worst micro-step of its cycle: autograd's ``AccumulateGrad`` adds
    each new gradient into ``.grad`` in place once it is made (torch 2.13,
    ``torch/csrc/autograd/functions/accumulate_grad.h``), so a new gradient is a transient."""
    weights = _weight_terms(w)
    state = 0 if opt.paged else opt.state_bytes
    held = act.loop_output_held(arch, st)
    # a plain loop's previous output holds its graph's leaf through this forward; under
    # checkpointing the autocast cache holds the layers' weight copies until the forward is done
    graph_held = act.loop_graph_held(arch, st) + act.autocast_cache_held(arch, st)

    # with accumulation, the engine's pending lm_head half of a tied table's gradient is no .grad yet
    pending = act.tied_head_grad_pending(arch, st) if accumulates else 0.0

    def moment(gradients: float = 0, logits: float = 0, activations_bytes: float = 0, phase: str = "backward",
               **values: float) -> dict[str, int]:
        """One moment of forward or backward: ``gradients`` the bytes of the gradients this micro-step
        has made (forward: none), which accumulation replaces by every ``.grad`` and what is pending."""
        alive = (grads + pending if gradients else grads) if accumulates else gradients
        return _terms(weights, optimizer_bytes=state, logits_bytes=logits + held + act.loss_held(st, phase),
                      activations_bytes=activations_bytes, gradients_bytes=alive, **values)

    top, top_st = act.layer_at(arch, st, -1)
    one_layer = act.layer_saved(top, top_st)
    layers = act.layers_saved(arch, st)
    head = act.head_saved(arch, st)
    # a recomputed layer's saved tensors, but what of them is its checkpoint (counted in ``layers``)
    recompute = one_layer - act.checkpoint_reused(top, top_st) if st.gradient_checkpointing else 0.0
    load = Phase("load", _terms(weights))
    chunked = st.loss == "chunked"
    loss_forward = (chunked_loss.forward_working(arch, st) if chunked else
                    act.logits_forward(arch, st) + act.logits_upcast_transient(arch, st))
    forward = [moment(activations_bytes=layers + head + graph_held, phase="forward", logits=loss_forward)]
    if st.objective == "dpo":
        # TRL's DPOTrainer scores the reference after the policy's forward, under no_grad, while the
        # policy's graph and output are alive (``_compute_loss``)
        policy = chunked_loss.saved(arch, st) + chunked_loss.output_held(st)
        forward += [moment(activations_bytes=layers + head + graph_held, phase="forward", logits=policy,
                           working_bytes=working) for working in act.reference_forward_working(arch, st)]
    if st.gradient_checkpointing:
        # inside a checkpointed layer nothing is kept, but its intermediates exist one at a time:
        # the MLP's (with a 4-bit weight dequantized next to them) and eager attention's scores
        forward.append(moment(activations_bytes=layers + graph_held, phase="forward",
                              working_bytes=act.inference_mlp_working(top, top_st) + st.dequant_bytes))
        if st.attn == "eager":
            forward.append(moment(activations_bytes=layers + graph_held, phase="forward",
                                  working_bytes=act.inference_attention_working(top, top_st)))
    if chunked:
        # the fused head's backward: its widest fold, a CPU's fp32 copies for the products, its return
        fused = chunked_loss.saved(arch, st)
        loss_moments = [moment(activations_bytes=layers + head, logits=fused + working(arch, st))
                        for working in (chunked_loss.backward_fold_working, chunked_loss.backward_accumulate_working,
                                        chunked_loss.backward_return_working)]
    else:
        loss_moments = [moment(activations_bytes=layers + head, logits=act.logits_backward_peak(arch, st))]
    # the input embeddings' gradients arrive last, after the bottom layer's backward (a tied
    # table's lm_head half is there from the start)
    late = act.embedding_grad_bytes(arch, st)
    top_grads = grads - layer_grads.below_top - late
    bottom, bottom_st = act.layer_at(arch, st, 0)
    # under checkpointing the bottom layer's checkpoint, and the masks all checkpoints hold
    # its checkpoint, unless its first norm keeps that very tensor
    checkpoint_held = (act.checkpoint_saved(arch, st) - act.checkpoint_reused(bottom, bottom_st)
                       + act.attention_masks(arch, st) if st.gradient_checkpointing else 0.0)
    last_layer = act.layer_saved(bottom, bottom_st) - act.frozen_input_unsaved(bottom, bottom_st) + checkpoint_held
    moments = loss_moments
    if accumulates and st.full and not chunked:
        # lm_head's backward: its new weight gradient is added into .grad (or, tied, held) only after it
        moments.append(_terms(weights, optimizer_bytes=state, gradients_bytes=grads + act.head_weight_grad(arch, st),
                              activations_bytes=layers + head, logits_bytes=held + act.loss_held(st, "backward"),
                              working_bytes=act.head_backward_working(arch, st)))
    recompute_working = act.all_experts_recompute_working(top, top_st)
    if recompute_working:
        moments.append(moment(top_grads, activations_bytes=layers + recompute, working_bytes=recompute_working))
    top_moments = _layer_backward_moments(top, top_st, layer_grads.bottom, layer_grads.bottom)
    bottom_moments = _layer_backward_moments(bottom, bottom_st, layer_grads.bottom, layer_grads.bottom_attention)
    for (working, consumed, top_not_yet), (bottom_working, bottom_consumed, not_yet) in zip(top_moments, bottom_moments,
                                                                                            strict=True):
        moments.append(moment(top_grads - top_not_yet, activations_bytes=layers + recompute - consumed,
                              working_bytes=working))
        # the bottom layer's own gradients come out of this very backward
        moments.append(moment(grads - late - not_yet, activations_bytes=last_layer - bottom_consumed,
                              working_bytes=bottom_working))
    tied = act.tied_embedding_grad_transient(arch, st)
    if tied:
        moments.append(moment(grads, working_bytes=tied))
    elif st.full:
        # the input embedding's backward, last: every gradient made, the incoming one of its output
        # alive (with accumulation, its own new gradient before it is added into .grad)
        new = act.embedding_grad_bytes(arch, st) if accumulates else 0.0
        moments.append(moment(grads, working_bytes=act.embedding_backward_working(arch, st) + new))
    backward = tuple(Phase("backward", t) for t in moments)
    step = Phase("optimizer_step", _terms(weights, gradients_bytes=grads, optimizer_bytes=state,
                                          logits_bytes=held + act.loss_held(st, "optimizer_step"),
                                          activations_bytes=act.loop_graph_held(arch, st),
                                          optimizer_step_temp_bytes=opt.step_temp_bytes))
    return (load, *(Phase("forward", t) for t in forward), *backward, step)


def _layer_backward_moments(layer: ArchSpec, st: ActivationSetting, mlp_not_yet: int, attention_not_yet: int
                            ) -> tuple[tuple[float, float, int], ...]:
    """Inside one layer's backward, (working bytes, its saved bytes already consumed, its own
    gradient bytes not yet made): the MLP's backward (its branch's residual dropout mask used up),
    attention's (the MLP's tensors used up and its gradients made by then), and a 4-bit Linear's
    dequantized weight (the largest is an MLP input: the MLP's own tensors are used up)."""
    return ((act.backward_working(layer, st), act.mlp_output_dropout_saved(layer, st), mlp_not_yet),
            (act.attention_backward_working(layer, st), act.mlp_half_saved(layer, st), attention_not_yet),
            (act.dequant_working(layer, st), act.mlp_saved(layer, st), mlp_not_yet))


def inference_phases(arch: ArchSpec, st: ActivationSetting, w: WeightBytes, kv_bits: int,
                     mode: InferenceMode, new_tokens: int) -> tuple[Phase, ...]:
    """load, then a prefill of ``b x s`` tokens filling the KV cache, as ``generate()`` runs it
    (``use_cache=True``, ``logits_to_keep=1``: logits of the last token only); or (``mode``
    ``forward``) one no-grad forward with labels, as a perplexity evaluation runs it: the same
    layers and KV cache (``use_cache`` is the config's, True), then every position's logits and the
    loss's fp32 upcast and log-softmax (:func:`act.evaluation_head_working`). ``new_tokens`` decoded
    after the prefill add ``generate()``'s decode moments (:func:`act.decode_moments`).

    The prefill's candidate moments: inside the last layer's MLP, inside its attention, and at the
    head once the layers are done; kept apart (rather than one max) so that every moment stays a
    polynomial in ``b`` and ``s``.
    """
    weights = _weight_terms(w)
    kv = act.kv_cache(arch, st, kv_bits)
    top, top_st = act.layer_at(arch, st, -1)
    masks = act.attention_masks(arch, st)  # alive while the decoder layers run
    layers = (act.inference_mlp_working(top, top_st), act.inference_attention_working(top, top_st))
    prefill = [_terms(weights, kv_cache_bytes=kv, working_bytes=working + masks) for working in layers]
    if mode == "forward":
        prefill.append(_terms(weights, kv_cache_bytes=kv, working_bytes=act.evaluation_stream(arch, st),
                              logits_bytes=act.evaluation_head_working(arch, st)))
        return (Phase("load", _terms(weights)), *(Phase("forward", t) for t in prefill))
    prefill.append(_terms(weights, kv_cache_bytes=kv, working_bytes=act.inference_head_stream(arch, st),
                          logits_bytes=st.batch * arch.vocab_size * st.logits_bytes))
    if new_tokens:  # generate() picks the first new token from the prefill's logits
        prefill += [_terms(weights, kv_cache_bytes=kv_end, **terms)
                    for kv_end, terms in act.decode_moments(arch, st, kv_bits, 1)]
    phases = (Phase("load", _terms(weights)), *(Phase("prefill", t) for t in prefill))
    if new_tokens <= 1:
        return phases
    return phases + tuple(Phase("decode", _terms(weights, kv_cache_bytes=kv_end, **terms))
                          for kv_end, terms in act.decode_moments(arch, st, kv_bits, new_tokens))


def _stored_quantization_notes(req: EstimateRequest, arch: ArchSpec) -> list[str]:
    """How the checkpoint's own ``quantization_config`` was read (:mod:`stored_quant`)."""
    stored, dequantized = stored_quant(arch.config), unread_quantization(arch.config)
    if stored is not None:
        return [f"the checkpoint is stored in bitsandbytes {stored.type} (its quantization_config), which "
                "from_pretrained loads as stored: LoRA on it is QLoRA"]
    if dequantized == "mxfp4":
        return ["the MXFP4 checkpoint is dequantized on load (transformers' Mxfp4Config(dequantize=True), "
                f"needed to train it): every weight in {req.dtype}"]
    if dequantized == "fp8":
        return [f"the FP8 checkpoint is dequantized to {req.dtype}, as transformers does on a CPU and on GPUs below "
                "compute capability 8.9; on 8.9 and above (RTX 4090, H100) it keeps FP8 weights, which is not "
                "modelled yet: there the weights take about half the bytes counted"]
    return []


def _assumptions(req: EstimateRequest, arch: ArchSpec, opt: OptimizerBytes | None,
                 targets_left_out: bool = False) -> tuple[str, ...]:
    """The estimate's assumptions for the normalized ``req``; ``targets_left_out``: the request named
    no LoRA target_modules (normalize resolved peft's default)."""
    if req.method == "inference" and req.inference_mode == "forward":
        notes = [f"one no-grad forward of {req.batch_size}x{req.seq_len} tokens with labels, as a perplexity "
                 "evaluation runs it (model(input_ids, labels=input_ids)): the config's use_cache (a KV cache), "
                 "every position's logits and the loss's fp32 upcast (--inference-mode generate: generate()'s "
                 "prefill)"]
    elif req.method == "inference" and req.new_tokens:
        notes = [f"generate() of {req.new_tokens} new tokens after a prompt of {req.batch_size}x{req.seq_len}: the "
                 "prefill (use_cache=True, logits_to_keep=1), then greedy decoding (no logits processor, every token "
                 f"decoded) with the cache grown to {req.seq_len + req.new_tokens - 1} positions, the fp32 copies of "
                 "the next-token logits and the grown input ids and attention mask (--inference-mode forward: an "
                 "evaluation forward with every position's logits)"]
    elif req.method == "inference":
        notes = [f"prefill of {req.batch_size}x{req.seq_len} tokens in one no-grad forward with use_cache=True and "
                 "logits_to_keep=1, as generate() runs it (--new-tokens N: its decoding too; --inference-mode "
                 "forward: an evaluation forward with every position's logits)"]
    else:
        notes = [
            _autocast_note(req),
            _loss_note(req),
            *_objective_notes(req),
            LOOP_NOTES[req.loop],
            _accumulation_note(req.grad_accum),
            _checkpointing_note(req),
            "steady state (step 2 onwards): optimizer state lives through forward and backward",
            "batch_size is the micro-batch per device; use_cache=False in training",
        ]
    if req.recipe is not None:
        notes[:0] = [f"recipe {req.recipe}: " + RECIPES[req.recipe].source + "; every field can be set otherwise",
                     *(f"recipe {req.recipe}'s {name} is not applied, so it stays at its library default "
                       f"({getattr(req, name)}): {why}" for name, why in req.recipe_exceptions)]
    notes.append(f"attention {req.attn_implementation}; with none given transformers picks "
                 f"{default_attention(arch)} for {arch.model_type} (sdpa where the class supports it, else eager)")
    if req.method in ("lora", "qlora"):
        notes.append("peft keeps adapters, their gradients and optimizer state in fp32")
        if targets_left_out:
            notes.append(default_targets_note(arch, req.lora.variant))
    if req.method == "qlora":
        notes.append("bitsandbytes quantizes only modules whose type is exactly nn.Linear/Conv1D; "
                     "lm_head stays unquantized")
        if req.prepare_kbit:
            logits = "" if req.autocast != "none" else " and the logits"
            notes.append("prepare_model_for_kbit_training casts embeddings, norms and lm_head to fp32, "
                         f"so the residual stream{logits} {'are' if logits else 'is'} fp32")
    if arch.num_local_experts:
        reach = ("peft reaches them (and the router) only through ParamWrapper, which keeps a full adapted copy"
                 if arch.peft_reaches_experts else
                 f"peft 0.21 has no conversion table for {arch.model_type}: no LoRA target reaches them")
        notes.append("transformers 5 fuses MoE experts into 3-D parameters: not nn.Linear, so never quantized; "
                     + reach)
    notes += _stored_quantization_notes(req, arch)
    if arch.expert_dispatch == "all":
        notes.append("every expert runs on every token, weighted by its sigmoid router score (0 outside the top "
                     f"{arch.num_experts_per_tok}), as transformers' Llama4TextMoe computes it: its activations "
                     f"scale with all {arch.num_local_experts} experts")
    if arch.model_type == "llama4":
        notes.append("AutoModelForCausalLM builds Llama4ForCausalLM from text_config: the vision tower and "
                     "projector of Llama4ForConditionalGeneration are not loaded")
    if arch.tower_linears:
        notes.append(f"{arch.model_type} is a multimodal wrapper: batches of text only; its vision tower and "
                     "projector hold their weights (and any adapters on them) but get no gradients or optimizer "
                     "state (AdamW skips a parameter whose .grad is None)")
    if opt is not None and opt.paged:
        notes.append("paged optimizer states live in CUDA unified memory and may be evicted to host RAM: "
                     "reported as paged_optimizer_bytes, not counted in the peak")
    if req.device == "cuda":
        notes.append(f"CUDA context {CUDA_CONTEXT_BYTES // MIB} MiB and allocator slack "
                     f"{ALLOCATOR_SLACK_FRACTION:.0%} of allocated are placeholders until GPU-measured")
    else:
        notes.append("device cpu: no CUDA context or allocator slack; peak equals exact tensor bytes")
    if req.sharding != "none":
        notes.append(f"{req.sharding} over {req.num_gpus} GPUs: per-GPU bytes")
    return tuple(notes)


LOOP_NOTES: dict[str, str] = {
    "trainer": "the loop keeps only the loss of the model's output, as Hugging Face Trainer's compute_loss and "
               "TRL's trainers do: the logits are freed before backward (--loop plain keeps them)",
    "plain": "a plain loop keeps the model's output (outputs = model(**batch); outputs.loss.backward(), as "
             "accelerate's and peft's examples): its logits stay alive through backward, the optimizer step "
             "and the next step's forward",
}


def _autocast_note(req: EstimateRequest) -> str:
    if req.autocast == "none":
        return f"no autocast: weights and compute in {req.dtype} (--autocast bf16|fp16 runs the forward under it)"
    stream = "fp32 (prepare_model_for_kbit_training)" if req.method == "qlora" and req.prepare_kbit else req.dtype
    adapters = ", LoRA adapters (fp32) computing through cast copies" if req.method in ("lora", "qlora") else ""
    scaler = "; fp16 with a GradScaler" if req.autocast == "fp16" else ""
    return (f"torch.autocast({req.autocast}) around the forward, its outputs converted to fp32 after, as accelerate "
            f"does for Hugging Face Trainer's {req.autocast}=True; weights and residual stream in {stream}, matmuls "
            f"and attention in {req.autocast}{adapters}{scaler}")


def _loss_note(req: EstimateRequest) -> str:
    if req.loss == "standard":
        return (f"loss on all {req.seq_len} positions: transformers' ForCausalLMLoss upcasts the logits to fp32 "
                "(--loss chunked scores them in tiles, as TRL's trainers do)")
    fold = ("TRL's Triton kernels fold each tile in place" if req.device == "cuda" else
            "without Triton (a CPU) torch ops fold each tile, with fp32 tile-sized temporaries")
    return (f"chunked loss: TRL 1.16's fused LM head (add_fused_lm_head, as its SFT and DPO trainers run it) scores "
            f"the {req.seq_len - 1} labelled positions of each sequence in tiles of up to "
            f"{chunked_loss.TOKEN_CHUNK_SIZE} tokens x {chunked_loss.CHUNK_SIZE} vocabulary columns in one buffer, "
            f"never materializing the logits; {fold}")


def _objective_notes(req: EstimateRequest) -> tuple[str, ...]:
    if req.objective == "sft":
        return ()
    reference = ("a frozen copy of the weights in " + req.dtype if req.method == "full" else
                 "the same model with its adapters disabled")
    return (f"DPO as TRL 1.16's DPOTrainer runs it: each of the {req.batch_size} examples is a chosen and a rejected "
            f"sequence of {req.seq_len} tokens (prompt and completion), {2 * req.batch_size} sequences in one batch; "
            f"the reference ({reference}) is scored in every step under no_grad after the policy's forward "
            "(precompute_ref_log_probs=False), its sigmoid loss",
            "every position of a sequence is scored: on CUDA TRL scores the completion's only, so a long prompt "
            "needs less in the fused head")


def _accumulation_note(grad_accum: int) -> str:
    if grad_accum == 1:
        return "one micro-batch per optimizer step (--grad-accum N accumulates N)"
    return (f"gradient accumulation over {grad_accum} micro-batches: from the second on, the gradients of those "
            "before are alive through forward and backward; the optimizer steps after the last")


def _checkpointing_note(req: EstimateRequest) -> str:
    default = default_checkpointing(req.method, req.prepare_kbit)
    source = ("peft's prepare_model_for_kbit_training(use_gradient_checkpointing=True)" if default else
              "transformers' TrainingArguments(gradient_checkpointing=False)")
    state = "on" if req.gradient_checkpointing else "off"
    flag = "--no-gradient-checkpointing" if default else "--gradient-checkpointing"
    return (f"gradient checkpointing {state} (non-reentrant); the default here is {'on' if default else 'off'}, "
            f"after {source}; {flag} changes it")


# DPO runs a chosen and a rejected sequence per example, concatenated into one batch (TRL 1.16
# ``DataCollatorForPreference``: chosen rows, then rejected rows)
SEQUENCES_PER_EXAMPLE = {"sft": 1, "dpo": 2}


@dataclass(frozen=True, eq=False)  # identity: step_plan returns one object per setting
class StepPlan:
    """Everything of an estimate that does not depend on the batch size or the sequence length,
    worked out once per architecture and setting."""

    arch: ArchSpec
    weights: WeightBytes
    setting: ActivationSetting  # batch and seq are placeholders
    tensors: tuple[tuple[int, int], ...]  # (params, count) of the trainable tensors
    adapter_params: int
    opt: OptimizerBytes | None  # None for inference
    grads: int
    layer_grads: LayerGrads
    paper: PaperFigure
    lora_ratio: float | None
    nf4_constant_bits: float | None
    inference_kv_bits: int
    inference_mode: InferenceMode
    new_tokens: int  # decoded by generate() after the prefill
    sharding: str
    num_gpus: int
    accumulates: bool  # more than one micro-batch per optimizer step
    sequences: int  # sequences the model runs per example (:data:`SEQUENCES_PER_EXAMPLE`)

    def moments_at(self, b: int, s: int) -> tuple[Phase, ...]:
        """Every candidate moment, per GPU, at batch ``b`` and sequence length ``s``, from the formulas."""
        st = replace(self.setting, batch=b * self.sequences, seq=s)
        if self.opt is None:
            moments = inference_phases(self.arch, st, self.weights, self.inference_kv_bits, self.inference_mode,
                                       self.new_tokens)
        else:
            moments = training_phases(self.arch, st, self.weights, self.grads, self.layer_grads, self.opt,
                                      self.accumulates)
        return _shard(moments, self.sharding, self.num_gpus, self.arch, self.weights)


class ShapeFree(NamedTuple):
    """The fields of a normalized request that a :class:`StepPlan` depends on (a cache key)."""

    method: Method
    dtype: str
    lora: LoraSpec | None  # None unless the method trains adapters
    quant: QuantSpec
    gradient_checkpointing: bool
    optimizer: Optimizer
    attn_implementation: AttnImplementation
    device: Device
    prepare_kbit: bool
    sharding: Sharding
    num_gpus: int
    loop: Loop
    accumulates: bool  # grad_accum > 1: the peak of a cycle does not depend on its length
    autocast: Autocast
    loss: Loss
    objective: Objective
    adapter_dtype: AdapterDtype
    inference_mode: InferenceMode
    new_tokens: int


def _shape_free(req: EstimateRequest) -> ShapeFree:
    """The :class:`ShapeFree` fields of a normalized request."""
    assert req.attn_implementation is not None and req.gradient_checkpointing is not None, "normalize() first"
    assert req.loss is not None and req.adapter_dtype is not None, "normalize() first"
    lora = req.lora if req.method in ("lora", "qlora") else None
    quant = req.quant or default_quant(req.method)  # normalize() has filled it in already
    return ShapeFree(req.method, req.dtype, lora, quant, req.gradient_checkpointing, req.optimizer,
                     req.attn_implementation, req.device, req.prepare_kbit, req.sharding, req.num_gpus, req.loop,
                     req.method != "inference" and req.grad_accum > 1, req.autocast, req.loss,
                     req.objective, req.adapter_dtype, req.inference_mode, req.new_tokens)


@lru_cache(maxsize=1024)
def step_plan(arch: ArchSpec, shape_free: ShapeFree) -> StepPlan:
    """The :class:`StepPlan` of ``arch`` under the :func:`_shape_free` fields of a request."""
    (method, dtype, lora, quant, gc, optimizer, attn, device, prepare_kbit, sharding, num_gpus, loop, accumulates,
     autocast, loss, objective, adapter_dtype, inference_mode, new_tokens) = shape_free
    req = EstimateRequest(model=arch, method=method, dtype=dtype, lora=lora or LoraSpec(), quant=quant,
                          gradient_checkpointing=gc, optimizer=optimizer, attn_implementation=attn,
                          device=device, prepare_kbit=prepare_kbit, loop=loop, autocast=autocast, loss=loss,
                          objective=objective, adapter_dtype=adapter_dtype, inference_mode=inference_mode,
                          new_tokens=new_tokens)
    tensors = trainable_tensors(arch, method, lora)
    n_adapter = adapter_params(arch, lora) if lora else 0
    opt, grads, layer_grads = None, 0, LayerGrads(0, 0, 0)
    if method != "inference":
        bits = DTYPE_BITS[dtype] if method == "full" else DTYPE_BITS[adapter_dtype]
        stepped = stepped_tensors(arch, method, lora)
        grads = gradient_bytes(stepped, bits)
        layer_grads = _layer_grad_bytes(arch, method, bits, grads)
        opt = optimizer_bytes(stepped, bits, optimizer, device)
    weights = weight_bytes(arch, method, dtype, quant, lora, prepare_kbit, DTYPE_BITS[adapter_dtype])
    if objective == "dpo" and method == "full":
        weights = replace(weights, plain_bytes=2 * weights.plain_bytes)  # the frozen reference model beside it
    return StepPlan(
        arch=arch,
        weights=weights,
        setting=activation_setting(req, arch),
        tensors=tensors,
        adapter_params=n_adapter,
        opt=opt,
        grads=grads,
        layer_grads=layer_grads,
        paper=paper_figure(method, arch.total_params, n_adapter, DTYPE_BITS[dtype]),
        lora_ratio=_lora_ratio(arch, lora),
        nf4_constant_bits=nf4_constant_bits(quant.double_quant) if quant.is_4bit else None,
        inference_kv_bits=DTYPE_BITS[dtype],
        inference_mode=inference_mode,
        new_tokens=new_tokens,
        sharding=sharding,
        num_gpus=num_gpus,
        accumulates=accumulates,
        sequences=SEQUENCES_PER_EXAMPLE[objective],
    )


# Plans asked for once so far: their second use fits the shape polynomial (a fit costs about
# as much as eight direct estimates, worth it only for a setting that comes back).
_USED_ONCE: dict[StepPlan, None] = {}
MAX_USED_ONCE = 4096


@lru_cache(maxsize=1024)
def _polynomial(plan: StepPlan) -> ShapePolynomial | None:
    return fit(plan.moments_at)


def fits(plan: StepPlan, s: int) -> bool:
    """Whether the plan's one polynomial in ``b`` and ``s`` holds at ``s``: not past the narrowest
    window (transformers masks explicitly there: another polynomial), nor where every sdpa call
    keeps a mask whose rows the memory-efficient kernel pads to a multiple of 16 (Falcon's), nor
    under the chunked loss, whose tiles stop growing at 4,096 tokens."""
    window = plan.arch.smallest_window
    if window and s >= window:
        return False
    if plan.setting.loss == "chunked":
        return False  # its tiles are min(b·(s-1), 4096) tokens; a CPU scores b = 1 through a view
    return not (plan.arch.mask_materialized and plan.setting.attn == "sdpa")


def step_moments(plan: StepPlan, b: int, s: int) -> tuple[tuple[Phase, ...], tuple[int, ...]]:
    """The worst moment of each phase, and the allocated bytes of every moment, at ``b, s``: from
    the plan's fitted polynomial once the plan is in use again (only the worst moments get their
    terms), else from the formulas. Both are exact; tests hold them equal."""
    if not fits(plan, s):
        moments = plan.moments_at(b, s)
        return _worst_per_phase(moments), tuple(m.allocated_bytes for m in moments)
    if plan not in _USED_ONCE:
        if len(_USED_ONCE) >= MAX_USED_ONCE:
            _USED_ONCE.clear()
        _USED_ONCE[plan] = None
        polynomial = None
    else:
        polynomial = _polynomial(plan)
    if polynomial is None:
        moments = plan.moments_at(b, s)
        return _worst_per_phase(moments), tuple(m.allocated_bytes for m in moments)
    totals = polynomial.totals_at(b, s)
    worst: dict[str, int] = {}
    for i, name in enumerate(polynomial.names):
        if name not in worst or totals[i] > totals[worst[name]]:
            worst[name] = i
    return tuple(Phase(name, polynomial.terms_at(i, b, s)) for name, i in worst.items()), tuple(totals)


def estimate(request: EstimateRequest) -> Estimate:
    """Estimate the peak memory of ``request``; raises :class:`EstimateError` on bad input."""
    req, arch = normalize(request)
    plan = step_plan(arch, _shape_free(req))
    phases, moment_bytes = step_moments(plan, req.batch_size, req.seq_len)
    peak = max(phases, key=lambda p: p.allocated_bytes)
    breakdown = dict(peak.terms)
    runtime = runtime_terms(req, peak.allocated_bytes)
    breakdown.update(runtime)
    peak_bytes = peak.allocated_bytes + sum(runtime.values())
    _check_countable(peak_bytes, req)
    opt = plan.opt
    return Estimate(
        request=req,
        arch=arch,
        total_params=arch.total_params,
        trainable_params=trainable_params(plan.tensors),
        adapter_params=plan.adapter_params,
        paper=plan.paper,
        lora_ratio=plan.lora_ratio,
        nf4_constant_bits=plan.nf4_constant_bits,
        phases=phases,
        moment_bytes=moment_bytes,
        peak_phase=peak.name,
        breakdown=breakdown,
        peak_allocated_bytes=peak.allocated_bytes,
        peak_bytes=peak_bytes,
        paged_optimizer_bytes=opt.state_bytes if opt is not None and opt.paged else 0,
        assumptions=_assumptions(req, arch, opt, targets_left_out=request.lora.target_modules is None),
    )


def _check_countable(peak_bytes: int, req: EstimateRequest) -> None:
    """Refuse a plan whose peak (and so any of its terms, none negative) exceeds
    :data:`MAX_PLAN_BYTES`: no device holds it, and its byte counts would not fit the 64-bit
    integers the documents, the JSON writer and the database carry."""
    if peak_bytes > MAX_PLAN_BYTES:
        tokens = req.batch_size * req.seq_len
        raise EstimateError("batch_size", f"batch_size × seq_len = {tokens:,} tokens would need {peak_bytes:.3e} "
                                          f"bytes, more than 2^63 - 1: no device holds such a plan")


def _worst_per_phase(moments: tuple[Phase, ...]) -> tuple[Phase, ...]:
    worst: dict[str, Phase] = {}
    for m in moments:
        if m.name not in worst or m.allocated_bytes > worst[m.name].allocated_bytes:
            worst[m.name] = m
    return tuple(worst.values())


class LayerGrads(NamedTuple):
    """Gradient bytes a step's backward produces layer by layer (a model may mix dense and sparse
    layers): the bottom layer's, produced last, of which its attention side's come after its MLP's,
    and all layers' but the top one's."""

    bottom: int
    below_top: int
    bottom_attention: int


def _layer_grad_bytes(arch: ArchSpec, method: str, bits: int, grads: int) -> LayerGrads:
    """Gradient bytes of the decoder layers: full fine-tuning, each layer's own parameters; LoRA,
    an equal share of the adapters' per layer."""
    L = max(arch.num_hidden_layers, 1)
    if method != "full":
        return LayerGrads(grads // L, grads // L * (L - 1), grads // L)
    every = sum(kind.layer_params * n for kind, _, _, n in arch.kind_counts)
    top = arch.layer_arch(L - 1).layer_params
    bottom = arch.layer_arch(0)
    return LayerGrads(math.ceil(bottom.layer_params * bits / 8), math.ceil((every - top) * bits / 8),
                      math.ceil(bottom.attention_params * bits / 8))


def _lora_ratio(arch: ArchSpec, lora: LoraSpec | None) -> float | None:
    """``r/d + r/k`` of the first targeted matrix (Li 2025, Eq. 9; Hu et al. 2021, LoRA, arXiv:2106.09685)."""
    if lora is None:
        return None
    m, _ = resolve_targets(arch, lora)[0]
    return lora_ratio(m.out_features, m.in_features, lora.r)


def runtime_terms(req: EstimateRequest, allocated: int) -> dict[str, int]:
    """What the device holds beside the allocated tensors: on CUDA the context and the caching
    allocator's slack (placeholders until GPU-measured), nothing on a CPU."""
    if req.device != "cuda":
        return dict.fromkeys(RUNTIME_TERMS, 0)
    return {
        "cuda_context_bytes": CUDA_CONTEXT_BYTES,
        "allocator_slack_bytes": int(math.ceil(allocated * ALLOCATOR_SLACK_FRACTION)),
    }


def _shard(phases: tuple[Phase, ...], sharding: str, num_gpus: int, arch: ArchSpec,
           w: WeightBytes) -> tuple[Phase, ...]:
    """Per-GPU bytes under data parallelism / ZeRO (Rajbhandari et al., arXiv:1910.02054, Fig. 1)."""
    if sharding == "none":
        return phases
    base = w.plain_bytes + w.quantized_bytes + w.constant_bytes
    per_layer = base * arch.layer_params / arch.total_params
    gathered = math.ceil(2 * per_layer)  # current layer + one prefetched
    return tuple(shard_phase(p, sharding, num_gpus, gathered) for p in phases)
