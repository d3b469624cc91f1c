"""Repos the fake hub serves: configs and safetensors headers as a checkpoint saved by transformers
holds them (a tensor per parameter of the model the config describes, in bf16), and the kinds of
repo a user may name that are not models tunefit can read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.fakehub import FakeRepo, json_file, safetensors_header
from tunefit.estimator import arch_from_config, get_model

SHARD_TENSORS = 200  # tensors per shard of a sharded checkpoint


def parameter_tensors(config: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter the model holds, the layers' numbered as transformers names them."""
    for k, t in enumerate(arch_from_config(config).param_tensors()):
        if t.count == 1:
            yield f"model.{k}.{t.name}", t.shape
        else:
            yield from ((f"model.layers.{i}.{k}.{t.name}", t.shape) for i in range(t.count))


def checkpoint_files(config: dict[str, Any], dtype: str = "BF16", shards: int = 1) -> dict[str, bytes]:
    """``config.json`` and the safetensors headers of its parameters: one ``model.safetensors``, or
    ``shards`` files named by a ``model.safetensors.index.json``."""
    tensors = {name: (dtype, shape) for name, shape in parameter_tensors(config)}
    files = {"config.json": json_file(config)}
    if shards == 1:
        files["model.safetensors"] = safetensors_header(tensors)
        return files
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = names[k * per:(k + 1) * per]
        files[shard] = safetensors_header({n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    files["model.safetensors.index.json"] = json_file({"metadata": {}, "weight_map": weight_map})
    return files


def bnb_4bit_files(config: dict[str, Any]) -> dict[str, bytes]:
    """A bitsandbytes NF4 checkpoint as transformers saves one (``unsloth/...-bnb-4bit``): each
    quantized Linear weight packed two values a byte (U8, ``(numel / 2, 1)``) with its quant state
    (``absmax``, ``quant_map``, the nested statistics, ``quant_state.bitsandbytes__nf4``); the rest bf16."""
    quantized = {"model.layers": True}
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, shape in parameter_tensors(config):
        if name.startswith(tuple(quantized)) and name.endswith("proj.weight"):
            numel = shape[0] * shape[1]
            tensors[name] = ("U8", (numel // 2, 1))
            tensors[f"{name}.absmax"] = ("U8", (numel // 64,))
            tensors[f"{name}.quant_map"] = ("F32", (16,))
            tensors[f"{name}.nested_absmax"] = ("F32", (max(1, numel // 64 // 256),))
            tensors[f"{name}.nested_quant_map"] = ("F32", (256,))
            tensors[f"{name}.quant_state.bitsandbytes__nf4"] = ("U8", (100,))
        else:
            tensors[name] = ("BF16", shape)
    quantization = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                    "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                    "bnb_4bit_compute_dtype": "bfloat16", "llm_int8_skip_modules": None}
    return {"config.json": json_file({**config, "quantization_config": quantization}),
            "model.safetensors": safetensors_header(tensors)}


def catalog_config(model_id: str) -> dict[str, Any]:
    return json.loads(json.dumps(get_model(model_id).config))


def standard_repos() -> dict[str, FakeRepo]:
    """The repos the tests name: a fine-tune of a catalog family (sharded), a catalog model by its
    Hub id, a pre-quantized bitsandbytes checkpoint, an FP8 one, a multimodal wrapper, a gated repo,
    a slow one, a repo whose config is not JSON, a diffusers pipeline, an encoder."""
    llama = catalog_config("llama-3.1-8b")
    small = catalog_config("qwen2.5-0.5b")
    return {
        "NousResearch/Hermes-3-Llama-3.1-8B": FakeRepo(checkpoint_files(llama, shards=4), downloads=50),
        "Qwen/Qwen2.5-0.5B": FakeRepo(checkpoint_files(small)),
        "unsloth/Qwen2.5-0.5B-bnb-4bit": FakeRepo(bnb_4bit_files(small), downloads=20),
        "google/gemma-3-4b-it": FakeRepo(checkpoint_files(catalog_config("gemma-3-4b"))),
        "Qwen/Qwen2.5-0.5B-FP8": FakeRepo(checkpoint_files(
            {**small, "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
                                              "activation_scheme": "dynamic"}}, dtype="F8_E4M3")),
        "meta-llama/Llama-3.1-8B-Instruct": FakeRepo(checkpoint_files(llama), gated=True, downloads=90),
        "slow/Llama-3.1-8B-Slow": FakeRepo(checkpoint_files(llama)),
        "broken/garbage-config": FakeRepo({"config.json": b"{not json", "model.safetensors": b""}),
        "stabilityai/stable-diffusion-xl-base-1.0": FakeRepo({"model_index.json": b"{}"}, pipeline_tag="text-to-image"),
        "google-bert/bert-base-uncased": FakeRepo({"config.json": json_file(
            {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768,
             "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "vocab_size": 30522})}, pipeline_tag="fill-mask"),
    }
