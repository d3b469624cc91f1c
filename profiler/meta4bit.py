"""4-bit quantization of a model that lives on the meta device, as ``from_pretrained`` does it.

bitsandbytes itself runs: transformers' quantizer swaps every exactly-``nn.Linear`` module for
``bnb.nn.Linear4bit`` (the same modules it skips: tied and output embeddings, the last module),
then each weight goes through ``bitsandbytes.functional.quantize_4bit``. Its custom ops
(``quantize_4bit``, ``quantize_blockwise``, ``gemm_4bit``, ``dequantize_4bit``, ...) have fake
(meta) implementations registered by bitsandbytes (``bitsandbytes/_ops.py``) that allocate their
real outputs, so the layers hold exactly what bitsandbytes lays out:

- the packed weight: uint8, ``ceil(n/2)`` bytes for ``n = out·in`` values;
- per block of 64 values an absmax: fp32, or with double quantization uint8 plus, per 256
  blocks, an fp32 second-level absmax, a 256-entry fp32 code and an fp32 offset;
- a 16-entry fp32 code per layer (Dettmers et al., arXiv:2305.14314, Sec. 3, NF4 + DQ).

In training the forward is one ``gemm_4bit`` op and the backward dequantizes the weight to the
compute dtype (``dequantize_4bit``) for the input gradient, as on a GPU. What a CUDA
``gemm_4bit`` allocates inside itself for inputs of more than 1536 tokens (the dequantized
weight, freed before it returns) is not seen, as on the CPU counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tunefit.estimator import QuantSpec

if TYPE_CHECKING:
    from bitsandbytes.nn.modules import Linear4bit


def quantize_on_meta(model: torch.nn.Module, quant: QuantSpec, dtype: torch.dtype) -> torch.nn.Module:
    """Quantize ``model`` (on the meta device, weights in ``dtype``) in place, as
    ``from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))``."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig
    from transformers.quantizers import AutoHfQuantizer

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.type,
                                bnb_4bit_use_double_quant=quant.double_quant, bnb_4bit_compute_dtype=dtype)
    # bitsandbytes caches its dynamic map on the device of the first tensor it quantizes: made here
    # on the host, so a meta copy never becomes the cache a real quantization later reads
    bnb.functional.name2qmap.setdefault("dynamic", bnb.functional.create_dynamic_map())
    quantizer = AutoHfQuantizer.from_config(config, pre_quantized=False)
    quantizer.preprocess_model(model, device_map={"": "meta"})
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            _quantize_layer(module, dtype, quant.blocksize)
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    return model


def _quantize_layer(module: Linear4bit, dtype: torch.dtype, blocksize: int) -> None:
    """The layer's weight, loaded in ``dtype`` and quantized by bitsandbytes (on meta)."""
    import bitsandbytes as bnb
    from bitsandbytes.nn.modules import Params4bit

    old = module.weight
    assert isinstance(old, Params4bit)  # Linear4bit keeps its weight as one
    weight = torch.empty(module.out_features, module.in_features, dtype=dtype, device="meta")
    packed, state = bnb.functional.quantize_4bit(weight, blocksize=blocksize,
                                                 compress_statistics=old.compress_statistics,
                                                 quant_type=old.quant_type, quant_storage=old.quant_storage)
    module.weight = bnb.nn.Params4bit(data=packed, requires_grad=False, quant_state=state, blocksize=blocksize,
                                      compress_statistics=old.compress_statistics, quant_type=old.quant_type,
                                      quant_storage=old.quant_storage, module=module, bnb_quantized=True)
    if module.bias is not None:
        module.bias = torch.nn.Parameter(torch.empty(module.out_features, dtype=dtype, device="meta"),
                                         requires_grad=False)
