"""Activation memory of a training step: the tensors autograd saves for backward.

The model is mechanistic, written per tensor that PyTorch keeps, for a plain training loop
(``model.train()``, ``loss = model(input_ids, labels=..., use_cache=False).loss``,
``loss.backward()``, no autocast). Symbols: ``t = b·s`` tokens, ``h`` hidden size,
``i`` intermediate size, ``a`` bytes of one residual-stream element, ``F = 4`` (fp32).

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

from dataclasses import dataclass

from .arch import ArchSpec, LinearSpec, ParamTarget

F = 4  # bytes of fp32
LORA_BYTES = 4  # peft keeps adapters in fp32 (autocast_adapter_dtype=True)
MASK_BYTES_CUDA = 1  # fused dropout keeps a bool mask
INPUT_GROUPS = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "qkv": "attn_in", "o": "attn_out",
                "mlp_in": "mlp_in", "mlp_out": "mlp_act"}
# Activation functions that transformers builds from several pointwise ops, each keeping a
# t·i tensor: gelu_new / gelu_pytorch_tanh in Python keep input, tanh output, 0.5·x, 1+tanh.
COMPOSITE_ACT_SAVED = {"gelu_new": 4}


@dataclass(frozen=True)
class ActivationSetting:
    """The facts about one training step that activations depend on."""

    batch: int
    seq: int
    stream_bytes: float  # bytes of one residual-stream element (2 bf16/fp16, 4 fp32)
    logits_bytes: float  # bytes of one logit as lm_head emits it
    full: bool  # every base weight trains
    lora_targets: tuple[str, ...]  # module names with a LoRA adapter
    lora_r: int
    lora_dropout: float
    attn: str  # eager | sdpa | flash_attention_2
    device: str  # cuda | cpu
    gradient_checkpointing: bool

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def norm_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one norm keeps for backward."""
    t, h, a = st.tokens, arch.hidden_size, st.stream_bytes
    if arch.layer_norms[0].kind == "layernorm":
        return t * h * a + 2 * t * F
    weight_grad = t * h * a if st.full else 0
    return t * h * F + t * F + weight_grad


def _input_widths(arch: ArchSpec) -> dict[str, int]:
    """Width of the input each group of Linears reads."""
    return {"attn_in": arch.hidden_size, "attn_out": arch.q_dim, "mlp_in": arch.hidden_size,
            "mlp_act": arch.intermediate_size}


def linear_inputs_saved(arch: ArchSpec, st: ActivationSetting, modules: tuple[LinearSpec, ...]) -> float:
    """Bytes the Linears of one layer keep of their inputs (base weight and LoRA adapters)."""
    t, a = st.tokens, st.stream_bytes
    widths = _input_widths(arch)
    total = 0.0
    shared_saved: set[str] = set()
    for m in modules:
        group = INPUT_GROUPS.get(m.role)
        if group is None:
            continue
        width = widths[group]
        if st.full:
            shared_saved.add(group)
            continue
        if m.name not in st.lora_targets:
            continue
        total += t * st.lora_r * LORA_BYTES  # lora_A output, kept by lora_B
        if st.lora_dropout > 0:
            mask = MASK_BYTES_CUDA if st.device == "cuda" else LORA_BYTES
            total += t * width * (LORA_BYTES + mask)
        elif a != LORA_BYTES:
            total += t * width * LORA_BYTES  # this module's own fp32 cast of its input
        else:
            shared_saved.add(group)
    total += sum(t * widths[g] * a for g in shared_saved)
    return total


def attention_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes the attention core keeps: q, k, v and either the s×s probabilities or the output + LSE."""
    b, s, t, a = st.batch, st.seq, st.tokens, st.stream_bytes
    n = arch.num_attention_heads
    qkv = t * (arch.q_dim + 2 * arch.kv_dim) * a
    if st.attn == "eager":
        expanded = 2 * t * (arch.q_dim - arch.kv_dim) * a  # repeat_kv copies under GQA
        probs = b * n * s * s * (F + (a if a != F else 0))  # fp32 softmax + its cast back
        return qkv + expanded + probs
    out = t * arch.q_dim * a
    lse = b * n * s * F
    return qkv + out + lse


def mlp_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes the MLP keeps between its Linears (activation input/output, gated product)."""
    t, i, a = st.tokens, arch.intermediate_size, st.stream_bytes
    act_saved = COMPOSITE_ACT_SAVED.get(arch.hidden_act, 1)
    if arch.gated_mlp:
        per_token = (act_saved + 2) * i * a  # act input (+ pieces), act output, up output
    else:
        per_token = act_saved * i * a
    if arch.num_local_experts:
        routed = arch.num_experts_per_tok
        router = arch.num_local_experts * (a + 2 * F)  # logits, fp32 softmax and top-k weights
        gathered = routed * arch.hidden_size * a  # each expert's gathered input rows
        return t * (routed * per_token + router + gathered)
    return t * per_token


def expert_inputs_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Inputs the MoE router and fused experts keep once their weight has a gradient: full
    fine-tuning, or LoRA on them through peft's ParamWrapper. Each expert matmul sees ``k``
    routed copies of every token; the router sees each token once."""
    t, a = st.tokens, st.stream_bytes
    total = 0.0
    for p in arch.layer_param_targets:
        if st.full or p.name in st.lora_targets:
            copies = arch.num_experts_per_tok if p.experts > 1 else 1
            total += t * copies * p.in_features * a
    return total


def _wrapped(arch: ArchSpec, st: ActivationSetting) -> list[ParamTarget]:
    return [p for p in arch.layer_param_targets if p.name in st.lora_targets]


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
        if p.experts > 1 and a != LORA_BYTES:
            stacked_rank = st.lora_r * p.rank_factor * p.experts
            total += stacked_rank * (p.in_features + p.out_features) * a
    return total


def layer_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one decoder layer keeps for backward without checkpointing."""
    norms = len(arch.layer_norms) * norm_saved(arch, st)
    return (
        norms
        + linear_inputs_saved(arch, st, arch.layer_linears)
        + attention_saved(arch, st)
        + mlp_saved(arch, st)
        + expert_inputs_saved(arch, st)
        + param_wrapper_saved(arch, st)
    )


def checkpoint_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Bytes one checkpointed layer keeps: its input hidden states."""
    return st.tokens * arch.hidden_size * st.stream_bytes


def layers_saved(arch: ArchSpec, st: ActivationSetting, one_layer: float | None = None) -> float:
    """Bytes all decoder layers keep at the end of the forward pass (``one_layer``: the
    :func:`layer_saved` figure, when the caller has it already)."""
    if st.gradient_checkpointing:
        return arch.num_hidden_layers * checkpoint_saved(arch, st)
    return arch.num_hidden_layers * (layer_saved(arch, st) if one_layer is None else one_layer)


def head_saved(arch: ArchSpec, st: ActivationSetting) -> float:
    """Final norm and the lm_head input (kept only when lm_head trains)."""
    final = norm_saved(arch, st) if arch.final_norm else 0.0
    head_input = st.tokens * arch.hidden_size * st.stream_bytes if st.full else 0.0
    return final + head_input


def logits_forward(arch: ArchSpec, st: ActivationSetting) -> float:
    """Logits held by the model output plus the fp32 ``log_softmax`` the loss keeps."""
    t, V = st.tokens, arch.vocab_size
    return t * V * (st.logits_bytes + F)


def logits_upcast_transient(arch: ArchSpec, st: ActivationSetting) -> float:
    """The fp32 copy ``logits.float()`` makes inside the loss (freed after ``log_softmax``)."""
    if st.logits_bytes == F:
        return 0.0
    return st.tokens * arch.vocab_size * F


def logits_backward_peak(arch: ArchSpec, st: ActivationSetting) -> float:
    """At ``log_softmax`` backward: logits, saved log-probs, incoming and outgoing fp32 grads."""
    t, V = st.tokens, arch.vocab_size
    return t * V * (st.logits_bytes + 3 * F)


def backward_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """Transient gradients inside one layer's backward: the MLP intermediate grads dominate."""
    t, i, a = st.tokens, arch.intermediate_size, st.stream_bytes
    routed = max(arch.num_experts_per_tok, 1)
    wrapped_grad = max((p.weight_params * a for p in _wrapped(arch, st)), default=0.0)  # dL/dW' of one
    return t * (2 * routed * i + 2 * arch.hidden_size) * a + wrapped_grad


def inference_mlp_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """No-grad prefill transient inside the MLP: gate, up and activation outputs (``t·i`` each)."""
    t, a = st.tokens, st.stream_bytes
    routed = max(arch.num_experts_per_tok, 1)
    mlp = t * routed * (3 if arch.gated_mlp else 2) * arch.intermediate_size * a
    return mlp + _prefill_residual(arch, st)


def inference_attention_working(arch: ArchSpec, st: ActivationSetting) -> float:
    """No-grad prefill transient inside eager attention: the scores, their fp32 softmax and cast
    (``b·n·s²``); sdpa / flash kernels never materialize them."""
    b, s, a = st.batch, st.seq, st.stream_bytes
    attn = b * arch.num_attention_heads * s * s * (2 * a + F) if st.attn == "eager" else 0.0
    return attn + _prefill_residual(arch, st)


def _prefill_residual(arch: ArchSpec, st: ActivationSetting) -> float:
    """The residual stream and the normalized hidden states alive next to either transient."""
    return 2 * st.tokens * arch.hidden_size * st.stream_bytes
