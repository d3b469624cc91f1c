"""``tunefit``: the command line (estimate, models, gpus, serve)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from tunefit.app.hub import resolver as hub
from tunefit.app.planning import service
from tunefit.app.planning.schemas import CapacityIn, CompareIn
from tunefit.estimator import EstimateError, EstimateRequest, estimate, gpus, models
from tunefit.estimator.adapters import VARIANTS, targets_text
from tunefit.estimator.peft_defaults import PEFT_VERSION
from tunefit.estimator.recipes import DEFAULT_RECIPE, NO_RECIPE, RECIPE_CHOICES, recipe_line
from tunefit.estimator.request import (
    ADAPTER_DTYPES,
    ATTN_IMPLEMENTATIONS,
    AUTOCASTS,
    DEFAULT_REQUEST,
    DEVICES,
    INFERENCE_MODES,
    LOOPS,
    LOSSES,
    METHODS,
    OBJECTIVES,
    OPTIMIZERS,
    QLORA_DEFAULT_QUANT,
    SHARDING,
    request_from_fields,
)
from tunefit.estimator.units import GIB
from tunefit.profiler.limits import SIMULATION_RECIPE


def _add_estimate_args(p: argparse.ArgumentParser, recipe: str = DEFAULT_RECIPE) -> None:
    """The plan's options; every default is the estimator's own (``DEFAULT_REQUEST``), under
    ``recipe`` (``DEFAULT_RECIPE``; a simulation's is ``NO_RECIPE``)."""
    default, lora, quant = DEFAULT_REQUEST, DEFAULT_REQUEST.lora, QLORA_DEFAULT_QUANT
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="catalog id (see `tunefit models`) or Hugging Face id (org/name[@revision]: "
                                     "its config.json and safetensors headers are read, no weights)")
    p.add_argument("--revision", default=None, help="a Hugging Face id's branch, tag or commit (default main)")
    src.add_argument("--config", help="path to a Hugging Face config.json")
    p.add_argument("--recipe", choices=RECIPE_CHOICES, default=recipe,
                   help=f"the defaults a framework's user gets, every other option still overriding them (default "
                        f"{recipe}; {NO_RECIPE}: the libraries' own defaults, without a framework)")
    p.add_argument("--method", choices=METHODS, default=None, help=f"default {default.method}")
    p.add_argument("--dtype", default=None,
                   help=f"fp32 | fp16 | bf16 (weights / compute dtype; default {default.dtype})")
    p.add_argument("--r", type=int, default=None, help=f"LoRA rank (default {lora.r})")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2·r)")
    p.add_argument("--targets", default=None,
                   help=f"comma-separated module names or all-linear (default: peft's default for the model's "
                        f"model_type, or where peft {PEFT_VERSION} has none its query and value projections)")
    p.add_argument("--variant", default=lora.variant, help=" | ".join(VARIANTS))
    p.add_argument("--lora-dropout", type=float, default=None, help=f"default {lora.dropout}")
    p.add_argument("--quant", default=None, help=f"nf4 | fp4 | int8 | none (qlora defaults to {quant.type})")
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None,
                   help=f"default {'on' if quant.double_quant else 'off'}")
    p.add_argument("--blocksize", type=int, default=None, help=f"default {quant.blocksize}")
    p.add_argument("--batch-size", type=int, default=default.batch_size)
    p.add_argument("--seq-len", type=int, default=default.seq_len)
    p.add_argument("--grad-accum", type=int, default=None,
                   help=f"micro-batches per optimizer step (gradient accumulation; default {default.grad_accum})")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   default=default.gradient_checkpointing,
                   help="default: on for QLoRA through peft's prepare_model_for_kbit_training, else off")
    p.add_argument("--prepare-kbit", action=argparse.BooleanOptionalAction, default=None,
                   help="QLoRA: peft's prepare_model_for_kbit_training (norms, embeddings, lm_head in fp32)")
    p.add_argument("--loop", choices=LOOPS, default=None,
                   help="trainer: only the loss is kept (HF Trainer, TRL); plain: outputs kept through backward")
    p.add_argument("--autocast", choices=AUTOCASTS, default=None,
                   help="torch.autocast around the forward (HF Trainer's bf16=True / fp16=True); none: no autocast")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="standard: transformers' loss over the full logits; chunked: TRL's fused LM head, in tiles "
                        "(default: chunked for dpo, as TRL's DPOTrainer, else standard)")
    p.add_argument("--adapter-dtype", choices=ADAPTER_DTYPES, default=None,
                   help="fp32: peft's adapters (get_peft_model upcasts them); bf16: as TRL casts a quantized "
                        "model's (default fp32; bf16 for QLoRA under --recipe trl-sft / trl-dpo)")
    p.add_argument("--inference-mode", choices=INFERENCE_MODES, default=None,
                   help="method inference: generate (generate()'s prefill, the default) or forward (an evaluation "
                        "forward with labels: every position's logits and the loss)")
    p.add_argument("--new-tokens", type=int, default=None,
                   help=f"method inference: tokens generate() decodes after the prompt (default {default.new_tokens}: "
                        "the prefill alone)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="sft: next-token loss; dpo: TRL's DPOTrainer (chosen and rejected sequences, a frozen "
                        "reference); default sft")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"default {default.optimizer}")
    p.add_argument("--attn", choices=ATTN_IMPLEMENTATIONS, default=default.attn_implementation,
                   help="default: what transformers picks (sdpa where the model supports it, else eager)")
    p.add_argument("--device", choices=DEVICES, default=default.device)
    p.add_argument("--gpu", action="append", default=None,
                   help="catalog GPU id to check the fit against, repeatable: the verdict for each comes first "
                        "(see `tunefit gpus`)")
    p.add_argument("--num-gpus", type=int, default=default.num_gpus)
    p.add_argument("--sharding", choices=SHARDING, default=default.sharding)
    p.add_argument("--json", action="store_true", help="print the JSON document the REST API returns")


def fields_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The request document fields the parsed options give (None: left out, for the recipe or
    the library default to fill)."""
    model = hub.active().model_arg(args.model, args.revision) if args.model else None
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                model = {"config": json.load(fh)}
        except (OSError, json.JSONDecodeError) as exc:
            raise EstimateError("config", f"cannot read {args.config}: {exc}") from exc
    targets = None if args.targets is None else args.targets if args.targets.lower() == "all-linear" else [
        t.strip() for t in args.targets.split(",") if t.strip()]
    given_quant = {"type": args.quant, "double_quant": args.double_quant, "blocksize": args.blocksize}
    # left out, the quantization is the method's default (or the recipe's)
    quant = given_quant if any(v is not None for v in given_quant.values()) else None
    return {
        "model": model, "method": args.method, "dtype": args.dtype, "recipe": args.recipe,
        "lora": {"r": args.r, "alpha": args.alpha, "target_modules": targets, "variant": args.variant,
                 "dropout": args.lora_dropout},
        "quant": quant, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "gradient_checkpointing": args.gradient_checkpointing, "optimizer": args.optimizer,
        "attn_implementation": args.attn, "device": args.device, "gpu": args.gpu[0] if args.gpu else None,
        "num_gpus": args.num_gpus, "sharding": args.sharding, "prepare_kbit": args.prepare_kbit, "loop": args.loop,
        "grad_accum": args.grad_accum, "autocast": args.autocast, "loss": args.loss,
        "objective": args.objective, "adapter_dtype": args.adapter_dtype, "inference_mode": args.inference_mode,
        "new_tokens": args.new_tokens,
    }


def request_from_args(args: argparse.Namespace) -> EstimateRequest:
    """The request the parsed options describe (built by the estimator's one constructor)."""
    return request_from_fields(fields_from_args(args))


def body_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The REST API's request body the parsed options describe: what they give, nothing else
    (so the API's schema and the recipe fill the rest as for any client); the GPUs as ``gpus``."""
    fields = fields_from_args(args)
    body = {k: v for k, v in fields.items() if v is not None and k != "gpu"}
    body["lora"] = {k: v for k, v in fields["lora"].items() if v is not None}
    if fields["quant"] is not None:
        body["quant"] = {k: v for k, v in fields["quant"].items() if v is not None}
    if args.gpu:
        body["gpus"] = args.gpu
    return body


def _gib(n: int) -> str:
    return f"{n / GIB:10.3f} GiB"


def _recipe_lines(req: dict) -> list[str]:
    """Which recipe the plan assumed (``--recipe``), and what of it the model could not take."""
    line = recipe_line(req)
    if line.name is None:
        return []
    more = " (--recipe NAME picks another)" if line.name != NO_RECIPE else ""
    return [f"recipe {line.name}: {line.title}{more}", *(f"  not applied: {e}" for e in line.exceptions)]


def _lora_lines(req: dict) -> list[str]:
    """The adapters the plan trains, with the modules they target (peft's default resolved)."""
    lora = req["lora"]
    if lora is None:
        return []
    return [f"lora: r {lora['r']}  alpha {lora['alpha']:g}  variant {lora['variant']}  "
            f"target_modules {targets_text(lora['target_modules'])}"]


def _verdict_lines(verdicts: list[dict]) -> list[str]:
    """The answer first: per GPU named, the verdict, what would make it fit, what would surprise."""
    lines = []
    for v in verdicts:
        lines.append(v["sentence"])
        lines += [f"  {i}. {s['label']}: {_gib(s['peak_bytes']).strip()} ({s['cost']})"
                  for i, s in enumerate(v["suggestions"], 1)]
        lines += [f"  note: {e}" for e in v["explanations"]]
        lines.append("")
    return lines


def _model_name(model: Any) -> str:
    """A catalog id, a Hub id (its config read from the Hub), or a pasted config."""
    if isinstance(model, str):
        return model
    source = model.get("source") or {}
    return str(source.get("id") or "config.json")


def _source_lines(source: dict | None) -> list[str]:
    """Where a Hub model's config came from: the exact commit, and the checkpoint's parameters
    where they differ from the estimate's."""
    if not source:
        return []
    stale = "; the Hub could not be reached now: a stored copy" if source.get("stale") else ""
    lines = [f"hub {source['id']} revision {source['revision']} = commit {source['sha']} (read from the Hub "
             f"{source['fetched_at']}{stale})"]
    if source.get("params_note"):
        lines.append(f"  note: {source['params_note']}")
    return lines


def render_table(doc: dict) -> str:
    """A readable table of the JSON document (numbers only come from the document)."""
    req = doc["request"]
    lines = [*_verdict_lines(doc["verdicts"]),
        f"model {_model_name(req['model'])}  method {req['method']}  "
        f"dtype {req['dtype']}  batch {req['batch_size']}  seq {req['seq_len']}  device {req['device']}",
        f"params: total {doc['params']['total']:,}  trainable {doc['params']['trainable']:,} "
        f"({doc['params']['trainable_percent']:.4f} %)",
        *_source_lines(doc.get("model_source")),
        *_lora_lines(req),
        *_recipe_lines(req),
        "",
        f"breakdown at the peak ({doc['peak_phase']}):",
    ]
    lines += [f"  {key.removesuffix('_bytes'):28s}{_gib(value)}" for key, value in doc["breakdown"].items() if value]
    lines += [
        f"  {'peak allocated':28s}{_gib(doc['peak_allocated_bytes'])}",
        f"  {'peak on device':28s}{_gib(doc['peak_bytes'])}",
        "",
        "phases (allocated):",
    ]
    lines += [f"  {p['phase']:28s}{_gib(p['allocated_bytes'])}" for p in doc["phases"]]
    lines += ["", f"paper: {doc['paper']['formula']} = {_gib(doc['paper']['bytes'])}"]
    if doc["paper"]["lora_ratio"] is not None:
        lines.append(f"LoRA ratio r/d + r/k (first target): {doc['paper']['lora_ratio']:.6f}")
    fits = [f for f in doc["fits"]]
    if fits:
        lines += ["", "fits:"]
        lines += [f"  {f['gpu']:20s}{'yes' if f['fits'] else 'no ':4s} headroom {_gib(f['headroom_bytes'])}"
                  for f in fits]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in doc["assumptions"]]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:  # a model the formulas do not know is simulated
        print(f"  simulating {done}/{total} shapes", file=sys.stderr)

    doc = service.document_for(request_from_args(args), args.gpu, progress)
    print(json.dumps(doc, indent=2) if args.json else render_table(doc))
    return 0


def _validated(schema: type[BaseModel], body: dict[str, Any]) -> Any:
    """``body`` as the API's ``schema`` reads it; its errors as the CLI's (field: message)."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EstimateError(".".join(str(p) for p in first["loc"]), first["msg"]) from exc


def cmd_capacity(args: argparse.Namespace) -> int:
    """Per GPU: fits, headroom, the largest batch and sequence, GPUs needed (the API's capacity document)."""
    doc = service.capacity_document(_validated(CapacityIn, {**body_from_args(args), "multi_gpu": args.multi_gpu}))
    print(json.dumps(doc, indent=2) if args.json else render_capacity(doc))
    return 0


def render_capacity(doc: dict) -> str:
    lines = [f"peak on one GPU {_gib(doc['peak_bytes'])}; recipe {doc['request']['recipe'] or NO_RECIPE}", "",
             f"{'gpu':18s}{'usable GiB':>11s}  fits  {'headroom GiB':>12s}  {'max batch':>9s}  {'max seq':>9s}  "
             f"GPUs needed ({doc['multi_gpu']})"]
    for r in doc["rows"]:
        needed = "—" if r["gpus_needed"] is None else str(r["gpus_needed"])
        lines.append(f"{r['gpu']:18s}{r['usable_bytes'] / GIB:11.2f}  {'yes ' if r['fits'] else 'no  '}  "
                     f"{r['headroom_bytes'] / GIB:12.2f}  {r['max_batch_size']:9d}  {r['max_seq_len']:9,d}  {needed}")
    return "\n".join(lines)


COLUMN_KEYS = ("label", "method", "r", "target_modules", "variant")


def _column(spec: str) -> dict[str, Any]:
    """``--column method=lora,r=8`` (target_modules joined by ``+``) as a comparison column."""
    column: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in COLUMN_KEYS or not value:
            raise EstimateError("column", f"{part!r}: expected key=value with key one of {list(COLUMN_KEYS)}")
        column[key] = int(value) if key == "r" and value.isdigit() else value.split("+") if key == "target_modules" \
            and value != "all-linear" else value
    return column


def cmd_compare(args: argparse.Namespace) -> int:
    """The same plan under several methods or ranks (the API's compare document)."""
    body = body_from_args(args)
    if args.column:
        body["variants"] = [_column(spec) for spec in args.column]
    doc = service.compare_document(_validated(CompareIn, body))
    print(json.dumps(doc, indent=2) if args.json else render_compare(doc))
    return 0


def render_compare(doc: dict) -> str:
    lines = [f"{'column':24s}{'peak GiB':>10s}  {'paper GiB':>10s}  {'trainable':>14s}  peak in"]
    for r in doc["results"]:
        d = r["document"]
        if d is None:
            lines.append(f"{r['label']:24s}  {r['error']}")
            continue
        lines.append(f"{r['label']:24s}{d['peak_bytes'] / GIB:10.2f}  {d['paper']['bytes'] / GIB:10.2f}  "
                     f"{d['params']['trainable']:14,d}  {d['peak_phase']}")
        lines += [f"  {v['sentence']}" for v in d["verdicts"]]
    return "\n".join(lines)


def cmd_models(args: argparse.Namespace) -> int:
    if args.search is not None:
        return _search_models(args)
    rows = [(m.id, m.hf_repo, m.arch.model_type, m.arch.total_params) for m in models().values()]
    if args.json:
        print(json.dumps([{"id": i, "hf_repo": r, "model_type": t, "params": p} for i, r, t, p in rows], indent=2))
        return 0
    print(_columns([("id", "hugging face id", "family", "params"),
                    *((i, r, t, f"{p:,}") for i, r, t, p in rows)], right=(3,)))
    return 0


def _search_models(args: argparse.Namespace) -> int:
    """Catalog entries whose id or Hugging Face id holds the text, then the Hub's text-generation
    models that do, most downloaded first (when the Hub is reachable)."""
    text = args.search.lower()
    catalog = [m.hf_repo for m in models().values() if text in m.id.lower() or text in m.hf_repo.lower()]
    found = hub.active().search(args.search, limit=args.limit)
    hub_only = [i for i in found if i.lower() not in {c.lower() for c in catalog}]
    if args.json:
        print(json.dumps({"catalog": catalog, "hub": hub_only}, indent=2))
        return 0
    rows = [("hugging face id", "where"), *((c, "catalog") for c in catalog), *((h, "hub") for h in hub_only)]
    print(_columns(rows) if len(rows) > 1 else f"nothing matches {args.search!r}")
    return 0


def _columns(rows: Sequence[Sequence[str]], right: tuple[int, ...] = ()) -> str:
    """Rows as aligned columns, each as wide as its widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in rows)


def cmd_gpus(args: argparse.Namespace) -> int:
    table = list(gpus().values())
    if args.json:
        print(json.dumps([{"id": g.id, "name": g.name, "memory_bytes": g.memory_bytes,
                           "usable_bytes": g.usable_bytes} for g in table], indent=2))
        return 0
    for g in table:
        print(f"{g.id:18s}{g.usable_bytes / GIB:8.2f} GiB usable  {g.name}")
    return 0


def render_measurement(result: dict) -> str:
    """Predicted vs measured, phase by phase (numbers only from the measurement's document)."""
    pred = {p["phase"]: p["allocated_bytes"] for p in result["prediction"]["phases"]}
    measured = result["measured"]
    env = result["environment"]
    what = "simulated" if env["device"] == "meta" else "measured"
    where = (f"simulated on the meta device for {env['target']}" if what == "simulated"
             else f"measured on {env['device']} ({env.get('device_name') or '?'})")
    lines = [
        f"{where}, torch {env['torch']}, "
        f"transformers {env['transformers']}, peft {env['peft']}, bitsandbytes {env['bitsandbytes']}",
        f"counter: {measured['counter']}; steady state = steps {measured['steady_state_steps']}",
        f"trainable params: {what} {result['trainable_params']['trainable']:,}  "
        f"predicted {result['prediction']['params']['trainable']:,}",
        "",
        f"{'phase':18s}{'predicted bytes':>18s}{what + ' bytes':>18s}{'error':>9s}{what:>16s}",
    ]
    rows = list(measured["phase_peaks"].items())
    rows.append(("peak", measured["peak_allocated_bytes"]))
    pred["peak"] = result["prediction"]["peak_allocated_bytes"]
    for phase, value in rows:
        expected = pred.get(phase)
        error = f"{100 * (expected - value) / value:+8.1f}%" if expected and value else f"{'—':>9s}"
        lines.append(f"{phase:18s}{expected or 0:18,}{value:18,}{error}{_gib(value)}")
    lines.append(f"(peak allocated tensor bytes per phase; error = (predicted - {what}) / {what}; "
                 f"{result['duration_s']:.1f} s)")
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure one setting in this process (or, ``tunefit simulate``, simulate it on the meta
    device for ``--target``) and print it next to the estimate."""
    simulated = args.command == "simulate"
    try:
        from tunefit.profiler import BuildError, measure, simulate
    except ImportError as exc:  # base install without the [profiler] extra
        raise EstimateError("profiler", f"needs the [profiler] extra (torch): {exc}") from exc
    if simulated and args.target:
        args.device = args.target
    request = request_from_args(args)
    estimate(request)  # bad input fails here, before loading torch models

    def progress(phase: str, step: int, total: int) -> None:
        if not args.json:
            print(f"  {phase} (step {step}/{total})", file=sys.stderr)

    try:
        result = (simulate if simulated else measure)(request, steps=args.steps, progress=progress)
    except BuildError as exc:
        raise EstimateError("profiler", str(exc)) from exc
    print(json.dumps(result, indent=2) if args.json else render_measurement(result))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """A standalone worker: runs profiling jobs until interrupted, polling the database (executor
    local) or consuming this device kind's Celery queue (executor celery)."""
    import logging

    from tunefit.app.core.config import Settings, get_settings
    from tunefit.app.core.db import Database
    from tunefit.app.hub.store import DatabaseStore
    from tunefit.app.jobs.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    if args.executor:
        settings = Settings(**{**settings.model_dump(), "executor": args.executor})
    if settings.executor == "celery":
        from tunefit.app.jobs.fleet import run_worker

        run_worker(settings, force_cpu=args.cpu)
        return 0
    db = Database(settings.sqlalchemy_url)
    hub.use(hub.HubResolver(settings, DatabaseStore(db)))  # the service's store: the commits it resolved
    worker = Worker(db, settings)
    try:
        worker.serve()
    except KeyboardInterrupt:
        worker.stop.set()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Run the validation matrix's missing cases (with --run), then print the accuracy table."""
    from pathlib import Path

    from tunefit.app.reports.data import REPORTS_DATA, accuracy_table, format_table, rows_from_files

    default = "meta-simulation.jsonl" if args.simulated else "cpu-validation.jsonl"
    data = Path(args.data) if args.data else REPORTS_DATA / default
    if args.run:
        from tunefit.profiler.validate import run_matrix

        def report(i, n, case, result, note):
            print(f"[{i}/{n}] {case.id}: {note}", file=sys.stderr)

        run_matrix(data, report=report, simulated=args.simulated)
    if not data.exists():
        raise EstimateError("data", f"{data} does not exist; run `tunefit validate --run` to measure the matrix")
    table = accuracy_table(rows_from_files([data]))
    print(f"{data} — {table['methods']['all']['ours'].n} measurements")
    print(format_table(table))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tunefit.app.core.config import get_settings
    from tunefit.app.main import create_app

    settings = get_settings()
    trusted = settings.forwarded_allow_ips.strip()
    uvicorn.run(create_app(settings), host=args.host or settings.host, port=args.port or settings.port,
                workers=1, proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunefit", description="GPU-memory planner for LLM fine-tuning")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("estimate", help="estimate the memory of one setting")
    _add_estimate_args(p)
    p.set_defaults(func=cmd_estimate)
    for name, func in (("models", cmd_models), ("gpus", cmd_gpus)):
        q = sub.add_parser(name, help=f"list the {name} catalog")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)
        if name == "models":
            q.add_argument("--search", metavar="TEXT", default=None,
                           help="catalog entries and Hugging Face models whose id holds TEXT (asks the Hub)")
            q.add_argument("--limit", type=int, default=10, help="Hub results shown with --search")
    prof = sub.add_parser("profile", help="measure one setting for real (needs the [profiler] extra)")
    _add_estimate_args(prof)
    prof.add_argument("--steps", type=int, default=3, help="training steps (step one allocates optimizer state)")
    prof.set_defaults(func=cmd_profile)
    sim = sub.add_parser("simulate", help="run one setting's training step on the meta device: every tensor the "
                                          "real code would allocate, counted, for any model size (needs [profiler])")
    _add_estimate_args(sim, recipe=SIMULATION_RECIPE)
    sim.add_argument("--target", choices=DEVICES, default=None,
                     help="device type whose kernels are simulated (default: --device)")
    sim.add_argument("--steps", type=int, default=2, help="training steps (step two is the steady state)")
    sim.set_defaults(func=cmd_profile)
    cap = sub.add_parser("capacity", help="per GPU: fits, the largest batch and sequence, GPUs needed")
    _add_estimate_args(cap)
    cap.add_argument("--multi-gpu", choices=("zero3", "fsdp"), default="zero3",
                     help="sharding used for the GPUs needed (default zero3)")
    cap.set_defaults(func=cmd_capacity)
    cmp = sub.add_parser("compare", help="the same plan under several methods or ranks (default full, lora, qlora)")
    _add_estimate_args(cmp)
    cmp.add_argument("--column", action="append", default=None,
                     help="a column, repeatable: comma-separated key=value of label, method, r, variant, "
                          "target_modules (joined by +); default: full, lora, qlora")
    cmp.set_defaults(func=cmd_compare)
    v = sub.add_parser("validate", help="the accuracy table of the validation matrix (CPU measurements)")
    v.add_argument("--run", action="store_true", help="measure the cases not yet in the data file first")
    v.add_argument("--simulated", action="store_true",
                   help="every catalog model simulated on the meta device for CUDA instead (with --run: "
                        "about 2 h on 2 cores for the whole sweep, resumable)")
    v.add_argument("--data", default=None, help="JSONL file (default reports/data/cpu-validation.jsonl, "
                                                "or meta-simulation.jsonl with --simulated)")
    v.set_defaults(func=cmd_validate)
    w = sub.add_parser("worker", help="run queued profiling jobs (standalone worker)")
    w.add_argument("--executor", choices=("local", "celery"), default=None,
                   help="local: poll the database; celery: consume the Celery queue of this host's device "
                        "(TUNEFIT_BROKER_URL). Default: TUNEFIT_EXECUTOR or local")
    w.add_argument("--cpu", action="store_true", help="celery: serve the cpu queues even on a GPU host")
    w.set_defaults(func=cmd_worker)
    s = sub.add_parser("serve", help="run the web service")
    s.add_argument("--host", default=None, help="default: TUNEFIT_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default: TUNEFIT_PORT or 8000")
    s.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except EstimateError as exc:
        print(f"tunefit: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, and keep the interpreter's own flush at exit
        # from raising again on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
