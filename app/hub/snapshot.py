"""What the service keeps of a Hub model: its ``config.json`` and a summary of its safetensors
headers at one commit, with the parameter count the checkpoint holds beside the estimator's."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Tensors a quantized checkpoint stores beside each quantized weight: bitsandbytes' 4-bit quant
# state (``absmax``, ``quant_map``, the nested ones of double quantization, the packed
# ``quant_state.bitsandbytes__nf4``) and its int8 scales (``SCB``, ``weight_format``), as
# transformers 5.23 ``integrations/bitsandbytes.py`` saves them; FP8 block scales
# (``weight_scale_inv``, ``integrations/finegrained_fp8.py``). They are not parameters.
QUANT_STATE_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                        ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4", ".SCB",
                        ".weight_format", ".weight_scale_inv", ".weight_scale", ".input_scale")
# Buffers older checkpoints saved with their weights (rotary tables): not parameters either.
BUFFER_SUFFIXES = (".inv_freq", ".masked_bias", ".attn.bias",
                   # the router's persistent bias buffer (DeepSeek-V3, GLM-4.5 ``e_score_correction_bias``)
                   ".e_score_correction_bias")
DTYPE_BYTES = {"F64": 8, "F32": 4, "I64": 8, "I32": 4, "BF16": 2, "F16": 2, "U8": 1, "I8": 1, "U16": 2,
               "I16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1, "F4": 0.5}


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of a safetensors header: its dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's safetensors headers summed up: ``params`` the model parameters it stores (a
    4-bit weight packed two to a byte counts twice its bytes; quant state and saved buffers are not
    counted), ``stored_bytes`` every tensor's bytes as stored, ``params_by_dtype`` the parameters
    per stored dtype."""

    files: int
    tensors: int
    params: int
    stored_bytes: int
    params_by_dtype: dict[str, int]

    @classmethod
    def of(cls, tensors: Iterable[StoredTensor], files: int) -> Checkpoint:
        listed = list(tensors)
        names = {t.name for t in listed}
        by_dtype: dict[str, int] = {}
        stored = 0
        for t in listed:
            stored += math.ceil(t.numel * DTYPE_BYTES.get(t.dtype, 0))
            if t.name.endswith(QUANT_STATE_SUFFIXES + BUFFER_SUFFIXES):
                continue
            packed = t.dtype == "U8" and f"{t.name}.absmax" in names  # bitsandbytes' 4-bit: two values a byte
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.numel * (2 if packed else 1)
        return cls(files=files, tensors=len(listed), params=sum(by_dtype.values()), stored_bytes=stored,
                   params_by_dtype=dict(sorted(by_dtype.items())))


@dataclass(frozen=True)
class HubSnapshot:
    """A Hub model at one commit: the id as the Hub spells it, the revision asked for and the
    commit it resolved to, when it was fetched, its ``config.json`` and its checkpoint (None: the
    repo holds no safetensors weights)."""

    repo_id: str
    revision: str
    sha: str
    fetched_at: str
    config: dict[str, Any] = field(repr=False)
    checkpoint: Checkpoint | None = None

    @property
    def reference(self) -> str:
        """``org/name@commit``: the exact revision, which names this snapshot again."""
        return f"{self.repo_id}@{self.sha}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> HubSnapshot:
        checkpoint = value.get("checkpoint")
        return cls(repo_id=value["repo_id"], revision=value["revision"], sha=value["sha"],
                   fetched_at=value["fetched_at"], config=dict(value["config"]),
                   checkpoint=Checkpoint(**checkpoint) if checkpoint else None)
