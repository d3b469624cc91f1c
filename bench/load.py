"""Mixed load on the service while CPU profiling jobs run: throughput, latency, errors.

Starts ``tunefit serve`` (one process, its in-process worker on) on a free port with a temporary
data directory, keeps a CPU profiling job running in the background the whole time (a new one is
queued as soon as the last finishes), and drives the API with ``--clients`` keep-alive clients,
each sending a weighted random mix: estimates (settings never seen before, and repeated ones),
capacity queries (repeated and new), comparisons, the accuracy report and the model list.

Prints, per kind of request: requests, requests/s, p50/p90/p99/max latency and errors (non-200
answers, timeouts, broken connections); the server process's CPU time per request; and for how
much of the window a profiling job was running. Exits 1 when a request or a job failed or the
goal (no errors; p99 of estimates under 100 ms while a job runs) was missed.

Run: python bench/load.py [--seconds 60] [--clients 64] [--think-ms 0] [--json out.json]

With ``--think-ms 0`` (default) every client sends its next request as soon as the last is
answered: the server is saturated, and by Little's law the mean latency is then the number of
clients over the throughput. ``--think-ms`` gives each client a pause between requests, as people
and scripts that read the answers have.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_bench  # noqa: E402
from api_bench import Connection, estimate_bodies, percentile, server_cpu_seconds  # noqa: E402

ESTIMATE_P99_GOAL_S = 0.100
REQUEST_TIMEOUT_S = 30.0
# A profiling job of about half a minute on a 2-core machine: a 4-layer llama-like model, LoRA,
# 512 tokens, 20 steps, on the server's in-process CPU worker.
JOB = {"model": {"config": {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376,
                            "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
                            "vocab_size": 8000}},
       "method": "lora", "device": "cpu", "batch_size": 2, "seq_len": 512, "lora": {"r": 8}, "steps": 20}
ESTIMATES = ("estimate (new setting)", "estimate (repeated)")


def request_kinds() -> dict[str, tuple[float, str, str, Callable[[], bytes]]]:
    """kind: (weight, method, path, next body)."""
    settings = estimate_bodies()
    repeated = [json.dumps(b).encode() for b in settings]
    counter = itertools.count()

    def new_setting() -> bytes:  # the sequence length counts up: never in the server's answer cache
        i = next(counter)
        return json.dumps({**settings[i % len(settings)], "seq_len": 64 + i}).encode()

    compare = json.dumps({"model": "llama-3-8b", "batch_size": 2, "seq_len": 2048}).encode()
    return {
        ESTIMATES[0]: (40, "POST", "/api/v1/estimate", new_setting),
        ESTIMATES[1]: (20, "POST", "/api/v1/estimate", lambda: random.choice(repeated)),
        "capacity (repeated)": (15, "POST", "/api/v1/capacity", lambda: random.choice(repeated)),
        "capacity (new setting)": (5, "POST", "/api/v1/capacity", new_setting),
        "compare": (5, "POST", "/api/v1/compare", lambda: compare),
        "report (GET /api/v1/reports)": (10, "GET", "/api/v1/reports", lambda: b""),
        "models": (5, "GET", "/api/v1/models", lambda: b""),
    }


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Jobs:
    started: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    running_s: float = 0.0


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    """``tunefit serve`` as a user starts it, worker in-process; no job rate limit (the bench
    queues jobs itself), room in the queue."""
    env = {"TUNEFIT_RUN_WORKER": "true", "TUNEFIT_WORKER_POLL_S": "0.2", "TUNEFIT_JOB_RATE_PER_MINUTE": "0",
           "TUNEFIT_MAX_QUEUED_JOBS": "1000"}
    return api_bench.start_server(data_dir, [sys.executable, "-m", "tunefit.app.cli", "serve"], env, timeout_s=60)


async def keep_a_job_running(url: str, jobs: Jobs, current: str, window: tuple[float, float]) -> None:
    """Follow job ``current``, queueing a new CPU profiling job whenever none is queued or running,
    until ``window`` ends; count the time one runs inside ``window`` (polling every half second)."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        last = time.perf_counter()
        while (now := time.perf_counter()) < window[1]:
            if current is None:
                r = await client.post("/api/v1/profile", json=JOB)
                r.raise_for_status()
                current, jobs.started = r.json()["id"], jobs.started + 1
            job = (await client.get(f"/api/v1/profile/{current}")).json()
            if job["status"] == "running":
                jobs.running_s += max(0.0, min(now, window[1]) - max(last, window[0]))
            if job["status"] in ("done", "failed"):
                jobs.done += job["status"] == "done"
                if job["status"] == "failed":
                    jobs.failed.append(job["error"])
                current = None
                continue
            last = now
            await asyncio.sleep(0.5)


async def client_loop(url: str, kinds, tallies: dict[str, Tally], rng: random.Random, window: tuple[float, float],
                      think_s: float):
    host, port = url.removeprefix("http://").split(":")
    names = list(kinds)
    weights = [kinds[k][0] for k in names]
    conn = Connection(host, int(port))
    await conn.open()
    try:
        while (start := time.perf_counter()) < window[1]:
            kind = rng.choices(names, weights)[0]
            _, method, path, body = kinds[kind]
            try:
                status = await asyncio.wait_for(conn.request(method, path, body()), REQUEST_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                status = 0
                conn.close()
                conn = Connection(host, int(port))
                await conn.open()
            if start >= window[0]:  # the warm-up is not counted
                tallies[kind].latencies.append(time.perf_counter() - start)
                tallies[kind].errors += status != 200
            if think_s:  # a person reads the answer before the next request
                await asyncio.sleep(rng.expovariate(1 / think_s))
    finally:
        conn.close()


async def first_job_running(url: str, jobs: Jobs, timeout: float = 120) -> str:
    """Queue the first job and wait until it runs; its id."""
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        r = await client.post("/api/v1/profile", json=JOB)
        r.raise_for_status()
        job_id = r.json()["id"]
        jobs.started += 1
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if (await client.get(f"/api/v1/profile/{job_id}")).json()["status"] == "running":
                return job_id
            await asyncio.sleep(0.2)
    raise RuntimeError("the first profiling job did not start")


async def run(url: str, seconds: float, warmup: float, clients: int, jobs_on: bool, seed: int, think_s: float):
    kinds = request_kinds()
    tallies = {k: Tally() for k in kinds}
    jobs = Jobs()
    background = None
    first = await first_job_running(url, jobs) if jobs_on else None
    begin = time.perf_counter() + warmup
    window = (begin, begin + seconds)
    if jobs_on:
        background = asyncio.create_task(keep_a_job_running(url, jobs, first, window))
    await asyncio.gather(*(client_loop(url, kinds, tallies, random.Random(seed + i), window, think_s)
                           for i in range(clients)))
    if background is not None:
        await background
    return tallies, jobs


def summarize(tallies: dict[str, Tally], seconds: float) -> list[dict]:
    rows = []
    groups = {**{k: [k] for k in tallies}, "estimates (both kinds)": list(ESTIMATES), "all": list(tallies)}
    for label, members in groups.items():
        lat = sorted(x for m in members for x in tallies[m].latencies)
        errors = sum(tallies[m].errors for m in members)
        if not lat:
            rows.append({"kind": label, "requests": 0, "errors": errors})
            continue
        rows.append({"kind": label, "requests": len(lat), "per_s": len(lat) / seconds,
                     "p50_ms": percentile(lat, 50) * 1e3, "p90_ms": percentile(lat, 90) * 1e3,
                     "p99_ms": percentile(lat, 99) * 1e3, "max_ms": lat[-1] * 1e3, "errors": errors})
    return rows


def print_report(report: dict) -> None:
    pause = (f"each pausing {report['think_ms']:g} ms on average (exponential) between requests"
             if report["think_ms"] else "each sending its next request at once (saturation)")
    print(f"tunefit serve (one process, in-process worker), {report['clients']} keep-alive clients {pause}, "
          f"{report['seconds']:g} s after {report['warmup']:g} s warm-up, {os.cpu_count()} CPU cores shared by "
          f"server, profiling jobs and clients")
    jobs = report["jobs"]
    print(f"profiling jobs: a CPU job running {jobs['running_percent']:.0f} % of the window; {jobs['started']} "
          f"started, {jobs['done']} done, {len(jobs['failed'])} failed")
    print(f"{'kind':34s}{'requests':>9s}{'req/s':>9s}{'p50 ms':>9s}{'p90 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}"
          f"{'errors':>8s}")
    for row in report["rows"]:
        if not row["requests"]:
            print(f"{row['kind']:34s}{0:9d}{'':45s}{row['errors']:8d}")
            continue
        print(f"{row['kind']:34s}{row['requests']:9d}{row['per_s']:9.1f}{row['p50_ms']:9.1f}{row['p90_ms']:9.1f}"
              f"{row['p99_ms']:9.1f}{row['max_ms']:9.1f}{row['errors']:8d}")
    print(f"server CPU: {report['server_cpu_us_per_request']:.0f} us per request (the server process; jobs run in "
          f"child processes)")
    verdict = "met" if report["goal_met"] else "MISSED"
    print(f"goal (0 errors, estimate p99 < {ESTIMATE_P99_GOAL_S * 1e3:.0f} ms while a job runs): {verdict}")


def measure(seconds: float = 60, warmup: float = 5, clients: int = 64, jobs: bool = True, seed: int = 0,
            think_ms: float = 0.0) -> dict:
    """Run the load against a fresh server and return the report (see :func:`print_report`)."""
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            cpu_before = server_cpu_seconds(proc.pid)
            tallies, job_tally = asyncio.run(run(url, seconds, warmup, clients, jobs, seed, think_ms / 1e3))
            cpu = server_cpu_seconds(proc.pid) - cpu_before
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rows = summarize(tallies, seconds)
    by_kind = {r["kind"]: r for r in rows}
    total = by_kind["all"]
    estimates = by_kind["estimates (both kinds)"]
    running = 100 * job_tally.running_s / seconds if jobs else 0.0
    goal = (total["errors"] == 0 and not job_tally.failed and estimates.get("p99_ms", float("inf")) < 1e3 *
            ESTIMATE_P99_GOAL_S and (not jobs or running > 50))
    return {"seconds": seconds, "warmup": warmup, "clients": clients, "think_ms": think_ms, "rows": rows,
            "server_cpu_us_per_request": 1e6 * cpu / max(total["requests"], 1),
            "jobs": {"started": job_tally.started, "done": job_tally.done, "failed": job_tally.failed,
                     "running_percent": running},
            "goal_met": goal}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="mean pause of a client between its requests (0: back to back, the saturation test)")
    parser.add_argument("--no-jobs", action="store_true", help="no background profiling job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the report to this file")
    args = parser.parse_args()
    report = measure(args.seconds, args.warmup, args.clients, not args.no_jobs, args.seed, args.think_ms)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
