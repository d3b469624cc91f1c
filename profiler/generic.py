"""Any architecture transformers builds, answered from its own code: the meta-device simulation of
a (normalized) request at a few small shapes, fitted (:mod:`profiler.fit`) so that any batch size
and sequence length is answered without simulating again.

Where the formulas know a family the estimator answers; this path is for the rest (Gemma 4,
Qwen3.5's gated-delta layers, the hybrid state-space models) and for checking the formulas. On the
meta device transformers runs its torch reference paths (no ``causal-conv1d``,
``flash-linear-attention`` or ``mamba-ssm`` kernels, which need CUDA): the answer assumes them.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from tunefit.estimator import EstimateError, EstimateRequest
from tunefit.estimator.recipes import RECIPES
from tunefit.estimator.request import DEFAULT_REQUEST, ModelFacts, default_loss, normalize_simulated
from tunefit.estimator.simulated import SimulatedStep

from .accounting import LiveTensorBytes
from .build import TORCH_DTYPES, make_optimizer, prepare_for_training, random_model, source_config, vocab_size
from .fit import FitError, Piecewise, Segment, Shape, fit, piece_lengths, sample_shapes
from .kernels import TargetKernels, cuda_workspace_bytes
from .limits import field_refusals
from .run import Counter, _trainable, environment_versions, run_phases
from .simulation import META, SIMULATED_STEPS, meta_answers

# The fit's sample lengths step by this much from each piece's start (the first piece from 64: each
# simulation costs the same Python per op at any size; multiples of 64: no kernel pads them).
LENGTH_STEP = 64
SAMPLE_LENGTHS = piece_lengths(0, LENGTH_STEP)


class TimelineBytes(LiveTensorBytes):
    """:class:`LiveTensorBytes` that also keeps the live bytes after every op (the op's workspace
    counted, as in the peak): the moments a fit lines up across shapes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moments: list[int] = []

    def reset_peak(self) -> None:
        super().reset_peak()
        self.moments = [self.current_bytes]  # the phase starts with what is alive

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        before = self.peak_bytes
        self.peak_bytes = 0  # the op's own high-water mark, then the running one again
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self.moments.append(max(self.peak_bytes, self.current_bytes))
        self.peak_bytes = max(before, self.peak_bytes)
        return out


class TimelineCounter(Counter):
    """The simulation's counter, keeping each phase's moments (:class:`fit.Segment`)."""

    def __init__(self, model: torch.nn.Module, target: str) -> None:
        super().__init__(META, model, also_count=("cpu",) if target == "cpu" else (),
                         workspace=cuda_workspace_bytes if target == "cuda" else None, meter=TimelineBytes)
        self.segments: list[Segment] = []

    def end(self, phase: str, step: int) -> dict[str, Any]:
        assert isinstance(self.meter, TimelineBytes)
        moments = tuple(self.meter.moments)
        reading = super().end(phase, step)
        self.segments.append(Segment(phase, step, moments, reading["allocated_bytes"]))
        return reading


@dataclass(frozen=True)
class Simulated:
    """One setting simulated: its fit, piece by piece in the length (None where it does not hold,
    ``why`` says why), and what the model reports of itself."""

    fit: Piecewise | None
    why: str | None
    trainable_params: int
    total_params: int
    duration_s: float


Progress = Callable[[int, int], None]  # (shapes simulated, of how many)


def simulate_segments(model: torch.nn.Module, vocab: int, req: EstimateRequest, shape: Shape) -> list[Segment]:
    """The request's steps at ``shape`` on ``model`` (prepared once for every shape), its moments."""
    b, s = shape
    at_shape = EstimateRequest(**{**req.__dict__, "batch_size": b, "seq_len": s})
    training = req.method != "inference"
    optimizer = make_optimizer(model, at_shape, foreach=req.device == "cuda") if training else None
    counter = TimelineCounter(model, req.device)
    with meta_answers(), TargetKernels(req.device), counter:
        run_phases(model, optimizer, counter, at_shape, vocab, SIMULATED_STEPS, META, lambda *_: None)
    del optimizer
    return counter.segments


def fitted_setting(req: EstimateRequest, progress: Progress | None = None, starts: tuple[int, ...] = (0,)
                   ) -> Simulated:
    """Simulate ``req`` (normalized; its shape ignored) at each piece's shapes (a piece from each
    length in ``starts``) and fit it. The model is built and prepared once; each shape gets a fresh
    optimizer."""
    started = time.perf_counter()
    model, vocab = _prepared(req)
    plan = [(start, piece_lengths(start, LENGTH_STEP)) for start in starts]
    shapes = [shape for _, lengths in plan for shape in sample_shapes(lengths)]
    samples: dict[Shape, list[Segment]] = {}
    gc.freeze()  # the model and the libraries are no garbage: each phase's collection skips them
    try:
        for k, shape in enumerate(shapes):
            samples[shape] = simulate_segments(model, vocab, req, shape)
            if progress is not None:
                progress(k + 1, len(shapes))
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        raise EstimateError("model", f"transformers' own code fails on the meta device for this setting: "
                                     f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        gc.unfreeze()
    counts = _trainable(model)  # peft's own count: a 4-bit weight's packed values twice
    trainable, total = counts["trainable"], counts["total"]
    try:
        fitted, why = Piecewise(tuple((start, fit(samples, lengths)) for start, lengths in plan)), None
    except FitError as exc:
        fitted, why = None, str(exc)
    return Simulated(fitted, why, trainable, total, round(time.perf_counter() - started, 3))


def _prepared(req: EstimateRequest) -> tuple[torch.nn.Module, int]:
    config_dict, _ = source_config(req.model)
    with META:
        base = random_model(config_dict, dtype=TORCH_DTYPES[req.dtype], attn_implementation=req.attn_implementation)
    if req.quant is not None and req.quant.enabled:
        from .meta4bit import quantize_on_meta

        quantize_on_meta(base, req.quant, TORCH_DTYPES[req.dtype])
    model = prepare_for_training(base, req) if req.method != "inference" else base.eval()
    return model, vocab_size(base)


# ---- a request answered by simulation ------------------------------------------------------------

MAX_REMEMBERED = 64  # fitted settings kept in the process (a fit is a few kilobytes)
_remembered: dict[tuple[Any, ...], SimulatedStep] = {}


def simulated_step(request: EstimateRequest, progress: Progress | None = None) -> SimulatedStep:
    """``request`` (from ``request_from_fields``) answered by its fitted simulation: the model's
    facts read off the built model, the request normalized on them, the recipe's fields the meta
    device cannot run kept at their library defaults (and said), the setting fitted once and
    remembered for every other shape."""
    config, _ = source_config(request.model)
    config_key = json.dumps(config, sort_keys=True, default=str)
    facts = _facts.get(config_key)
    if facts is None:
        facts = _remember(_facts, config_key, _built_facts(config))
    req = _simulatable(normalize_simulated(request, facts))
    key = (config_key, repr(sorted((k, v) for k, v in req.__dict__.items() if k not in SHAPE_FIELDS)))
    step = _remembered.get(key)
    if step is None:
        step = _remember(_remembered, key, _fitted_step(req, facts, config, progress))
    return SimulatedStep(**{**step.__dict__, "request": req})


SHAPE_FIELDS = ("model", "batch_size", "seq_len", "gpu")  # a fitted setting answers every one of these
_facts: dict[str, ModelFacts] = {}
T = TypeVar("T")


def _remember(table: dict[Any, T], key: Any, value: T) -> T:
    """Keep ``value`` under ``key``, the oldest entry going past :data:`MAX_REMEMBERED`."""
    if len(table) >= MAX_REMEMBERED:
        table.pop(next(iter(table)))
    table[key] = value
    return value


def _built_facts(config: dict[str, Any]) -> ModelFacts:
    try:
        return model_facts(config)
    except EstimateError:
        raise
    except Exception as exc:  # transformers' config classes and models raise their own kinds
        raise EstimateError("model.config", f"transformers cannot build this config: {type(exc).__name__}: "
                                            f"{str(exc)[:300]}") from exc


def _simulatable(req: EstimateRequest) -> EstimateRequest:
    """The fields the meta device cannot run: where the request's recipe set them, back at the
    library default, said in ``recipe_exceptions``; set otherwise, refused with the reason."""
    refused = field_refusals(req)
    preset = RECIPES[req.recipe].fields if req.recipe is not None else {}
    exceptions = list(req.recipe_exceptions)
    for name, why in refused.items():
        if name not in preset or preset[name] != getattr(req, name):
            raise EstimateError(name, why)
        default = default_loss(req.objective) if name == "loss" else getattr(DEFAULT_REQUEST, name)
        req = EstimateRequest(**{**req.__dict__, name: default})
        exceptions.append((name, why))
    return EstimateRequest(**{**req.__dict__, "recipe_exceptions": tuple(exceptions)})


def model_facts(config: dict[str, Any]) -> ModelFacts:
    """What normalizing needs of the model ``config`` builds, read off it on the meta device."""
    with META:
        model = random_model(config)
    model_type = str(model.config.model_type)
    names = tuple(dict.fromkeys(n.rpartition(".")[2] for n, m in model.named_modules()
                                if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")))
    targets, note = _default_targets(model_type, names)
    return ModelFacts(model_type=model_type, supports_sdpa=bool(getattr(model, "_supports_sdpa", False)),
                      linear_names=names, default_targets=targets, targets_note=note, config=config)


def _default_targets(model_type: str, names: tuple[str, ...]) -> tuple[tuple[str, ...] | str, str]:
    """peft's default for ``model_type`` (its mapping), else the query and value projections where
    the model names them so, else every Linear ("all-linear"), said."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    listed = MAPPING.get(model_type)
    if listed is not None:
        return tuple(listed), (f"target_modules left out: {', '.join(listed)}, peft's default for {model_type} "
                               "(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, peft/utils/constants.py)")
    qv = tuple(n for n in ("q_proj", "v_proj") if n in names)
    if len(qv) == 2:
        return qv, (f"peft has no default target_modules for {model_type} (get_peft_model raises without them); "
                    "assumed its query and value projections: q_proj, v_proj — name target_modules to choose")
    return "all-linear", (f"peft has no default target_modules for {model_type} and it names no q_proj/v_proj; "
                          "assumed all-linear (every Linear but the output head) — name target_modules to choose")


def _fitted_step(req: EstimateRequest, facts: ModelFacts, config: dict[str, Any],
                 progress: Progress | None) -> SimulatedStep:
    windows = _windows(config)
    max_positions = _max_positions(config)
    simulated = fitted_setting(req, progress, starts=(0, *windows))
    fitted = simulated.fit
    how = {"kind": "fitted" if fitted else "direct", "sample_lengths": list(SAMPLE_LENGTHS),
           "duration_s": simulated.duration_s, **environment_versions()}
    if fitted is None:
        how["why"] = (f"its memory is no polynomial in batch and sequence ({simulated.why}; a chunked torch "
                      "reference path pads the sequence to its chunks), so each shape is simulated directly")
        direct = direct_simulation(req)
        return SimulatedStep(request=req, facts=facts, phase_peaks=lambda b, s: direct(b, s)[0],
                             phase_ends=lambda b, s: direct(b, s)[1], total_params=simulated.total_params,
                             trainable_params=simulated.trainable_params, max_position_embeddings=max_positions,
                             fitted=False, max_seq_len=max_positions, how=how)
    pieces = " and ".join(f"from {start or 1:,} tokens at s {', '.join(map(str, piece_lengths(start, LENGTH_STEP)))}"
                          for start in (0, *windows))
    how["fit"] = (f"meta-device simulations at b 1, 2 and 3 {pieces}, fitted as exact polynomials in b and s "
                  f"(a piece from each attention window on) and checked at two more shapes each, in "
                  f"{simulated.duration_s:.1f} s")
    return SimulatedStep(request=req, facts=facts, phase_peaks=fitted.phase_peaks, phase_ends=fitted.phase_ends,
                         total_params=simulated.total_params, trainable_params=simulated.trainable_params,
                         max_position_embeddings=max_positions, fitted=True, max_seq_len=max_positions, how=how)


def direct_simulation(req: EstimateRequest) -> Callable[[int, int], tuple[dict[str, int], dict[str, int]]]:
    """Each phase's steady-state peak and end at (b, s), simulated there (remembered)."""
    model, vocab = _prepared(req)
    known: dict[Shape, tuple[dict[str, int], dict[str, int]]] = {}

    def at(b: int, s: int) -> tuple[dict[str, int], dict[str, int]]:
        if (b, s) not in known:
            gc.freeze()
            try:
                segments = simulate_segments(model, vocab, req, (b, s))
            finally:
                gc.unfreeze()
            last = max(seg.step for seg in segments)
            peaks: dict[str, int] = {}
            for seg in segments:
                if seg.step >= min(2, last) or seg.phase == "load":
                    peaks[seg.phase] = max(peaks.get(seg.phase, 0), max(seg.moments))
            ends = {seg.phase: seg.end_bytes for seg in segments if seg.step in (0, last)}
            known[(b, s)] = peaks, ends
        return known[(b, s)]

    return at


WINDOW_KEYS = ("sliding_window", "attention_chunk_size")


def _windows(config: dict[str, Any]) -> tuple[int, ...]:
    """The attention windows the config sets, ascending: from each on, transformers builds its
    sliding (or chunked) mask, so the fit starts a piece there. A piece's samples must fit before
    the next window."""
    text = _text_config(config)
    found = sorted({v for c in (config, text) for k in WINDOW_KEYS if isinstance(v := c.get(k), int) and v > 0})
    span = 4 * LENGTH_STEP  # a piece's samples and its check
    if any(b - a < span for a, b in zip((0, *found), found, strict=False)):
        raise EstimateError("model", f"attention windows {found} leave less than {span} tokens between them: "
                                     "too close to fit each stretch (not answered yet)")
    return tuple(found)


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, dict) else {}


def _max_positions(config: dict[str, Any]) -> int:
    text = _text_config(config)
    value = config.get("max_position_embeddings") or text.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else 131072

