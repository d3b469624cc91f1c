"""tunefit estimator: GPU memory of full fine-tuning, LoRA and QLoRA, stdlib only.

>>> from tunefit.estimator import EstimateRequest, LoraSpec, estimate
>>> est = estimate(EstimateRequest("llama-2-7b", method="qlora", lora=LoraSpec(r=16)))
"""

from .adapters import ALL_LINEAR, LoraSpec, adapter_params
from .arch import ArchSpec, LinearSpec, arch_from_config
from .catalog import CatalogModel, Gpu, get_gpu, get_model, gpus, models
from .document import to_document
from .errors import EstimateError
from .estimate import ESTIMATOR_VERSION, Estimate, estimate
from .hardware import Capacity, GpuFit, capacity, fit_table, gpus_needed, max_batch_size, max_seq_len
from .phase import Phase
from .quant import QuantSpec
from .request import EstimateRequest

__version__ = ESTIMATOR_VERSION

__all__ = [
    "ALL_LINEAR", "ArchSpec", "Capacity", "CatalogModel", "ESTIMATOR_VERSION", "Estimate", "EstimateError",
    "EstimateRequest", "Gpu", "GpuFit", "LinearSpec", "LoraSpec", "Phase", "QuantSpec", "adapter_params",
    "arch_from_config", "capacity", "estimate", "fit_table", "get_gpu", "get_model", "gpus", "gpus_needed",
    "max_batch_size", "max_seq_len", "models", "to_document",
]
