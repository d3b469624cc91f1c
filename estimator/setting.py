"""The facts about one step that the activation terms read (``activations``, ``chunked_loss``):
one frozen dataclass, its own module so that both read it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from .units import FP32_BYTES


@dataclass(frozen=True)
class ActivationSetting:
    """The facts about one training step that activations depend on."""

    batch: int
    seq: int
    stream_bytes: float  # bytes of one residual-stream element (2 bf16/fp16, 4 fp32)
    logits_bytes: float  # bytes of one logit as lm_head emits it
    full: bool  # every base weight trains
    lora_targets: tuple[str, ...]  # names of the Linear modules with a LoRA adapter
    lora_r: int
    lora_dropout: float
    attn: str  # eager | sdpa | flash_attention_2
    device: str  # cuda | cpu
    gradient_checkpointing: bool
    # bitsandbytes 4-bit: a quantized Linear dequantizes its whole weight to the compute dtype for
    # each matmul (forward and backward); the largest such transient, in bytes (0 unquantized).
    dequant_bytes: float = 0.0
    # names of the stacked MoE parameters peft's ParamWrapper adapts
    wrapped_targets: tuple[str, ...] = ()
    # The attention window of the layer in question (0: full causal attention); per layer where
    # the model mixes sliding and full layers (``ArchSpec.layer_windows``).
    window: int = 0
    # Whether the layer in question rotates q and k (Llama 4's NoPE layers do not; ``ArchSpec.layer_rope``).
    rope: bool = True
    # peft's variant of the adapters (``LoraSpec.variant``): DoRA's forward keeps more
    lora_variant: str = "lora"
    # the training loop (``request.Loop``): ``plain`` holds the model's output between steps
    loop: str = "trainer"
    # bytes of the dtype ``torch.autocast`` runs the forward in (0: no autocast)
    autocast_bytes: float = 0.0
    # the base Linears are bitsandbytes' (QLoRA): their outputs come back in their input's dtype
    quantized: bool = False
    # the loss (``request.Loss``): ``chunked`` runs TRL's fused LM head (:mod:`chunked_loss`)
    loss: str = "standard"
    # the objective (``request.Objective``): under ``dpo`` the batch holds the chosen and the rejected sequences
    objective: str = "sft"
    # bytes of one adapter element: peft's fp32 (``autocast_adapter_dtype=True``), or bf16 as TRL casts QLoRA's
    adapter_bytes: float = FP32_BYTES

    @property
    def tokens(self) -> int:
        return self.batch * self.seq
