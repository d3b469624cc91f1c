"""REST API throughput and latency against a running server (one uvicorn worker).

Starts ``uvicorn tunefit.app.main:create_app --factory`` on a free port with a temporary data directory,
then drives it with concurrent keep-alive clients (asyncio streams) and prints requests/s and p50/p99 latency of
/healthz, /api/v1/estimate and /api/v1/capacity, measured in the same run. The ratio of estimate
to healthz throughput shows what an estimate costs on top of the HTTP stack (goal >= 70 %).

Run: python bench/api_bench.py [--seconds 10] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

MODELS = ["llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2.5-7b", "gemma-2-9b", "llama-2-13b"]
METHODS = ["qlora", "lora", "full"]
SHAPES = [(1, 512), (4, 1024), (2, 2048), (8, 256)]


def estimate_bodies() -> list[dict]:
    """Varied settings, so that nothing a server might cache makes the numbers look better."""
    return [
        {"model": m, "method": method, "batch_size": b, "seq_len": s,
         "attn_implementation": "eager" if m.startswith("gemma-2") else "sdpa",  # no sdpa for Gemma 2
         "lora": {"r": 16, "target_modules": "all-linear" if method == "qlora" else ["q_proj", "v_proj"]}}
        for m, method, (b, s) in itertools.product(MODELS, METHODS, SHAPES)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str, command: list[str] | None = None, env: dict[str, str] | None = None,
                 timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    """A server on a free port with ``data_dir``: one uvicorn worker of the app, or ``command`` (its
    port appended as ``--port N``), with ``env`` added to the environment; its process and URL."""
    port = _free_port()
    argv = ([*command, "--port", str(port)] if command else
            [sys.executable, "-m", "uvicorn", "tunefit.app.main:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--log-level", "warning"])
    quiet = subprocess.DEVNULL if command else None
    proc = subprocess.Popen(argv, env={**os.environ, "TUNEFIT_DATA_DIR": data_dir, **(env or {})},
                            stdout=quiet, stderr=quiet)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


class Connection:
    """A keep-alive HTTP/1.1 connection on raw asyncio streams.

    httpx's own per-request cost is close to the server's on this scale, so with it the client,
    not the server, sets the pace; this client costs a few tens of microseconds per request.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


async def drive(url: str, method: str, path: str, bodies: Iterator[bytes] | None, seconds: float,
                concurrency: int) -> tuple[int, list[float], int]:
    """(requests completed, latencies in s, non-200 answers) within ``seconds``; each request
    takes the next body of ``bodies``."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = Connection(host, int(port))
        await conn.open()
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                status = await conn.request(method, path, next(bodies) if bodies else b"")
                latencies.append(time.perf_counter() - start)
                errors += status != 200
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time the server process has used (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def cases() -> list[tuple[str, str, str, Iterator[bytes] | None]]:
    """(label, method, path, bodies): healthz, then estimate and capacity, on repeated settings
    and on settings never sent before (the sequence length counts up, so no answer comes from
    the server's answer cache)."""
    settings = estimate_bodies()
    repeated = [json.dumps(b).encode() for b in settings]

    def new_settings() -> Iterator[bytes]:
        for i in itertools.count():
            yield json.dumps({**settings[i % len(settings)], "seq_len": 64 + i}).encode()

    capacity = [json.dumps({**b, "gpus": None}).encode() for b in settings]
    return [("/healthz", "GET", "/healthz", None),
            (f"estimate ({len(repeated)} settings, repeated)", "POST", "/api/v1/estimate", itertools.cycle(repeated)),
            ("estimate (every setting new)", "POST", "/api/v1/estimate", new_settings()),
            (f"capacity ({len(capacity)} settings, repeated)", "POST", "/api/v1/capacity", itertools.cycle(capacity)),
            ("capacity (every setting new)", "POST", "/api/v1/capacity", new_settings())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    plan = cases()
    labels = [label for label, *_ in plan]
    slot = args.seconds / args.rounds
    # rounds interleave the endpoints, so a slow spell of this shared machine hits them alike;
    # each round's ratio to /healthz is taken within the round
    counts = {label: 0 for label, *_ in plan}
    cpu = dict.fromkeys(counts, 0.0)
    latencies: dict[str, list[float]] = {label: [] for label, *_ in plan}
    errors = dict.fromkeys(counts, 0)
    ratios: dict[str, list[float]] = {label: [] for label, *_ in plan}
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            asyncio.run(drive(url, "GET", "/healthz", None, 1.0, args.concurrency))  # warm-up
            for _ in range(args.rounds):
                per_round = {}
                for label, method, path, bodies in plan:
                    before = server_cpu_seconds(proc.pid)
                    n, lat, err = asyncio.run(drive(url, method, path, bodies, slot, args.concurrency))
                    cpu[label] += server_cpu_seconds(proc.pid) - before
                    counts[label] += n
                    latencies[label] += lat
                    errors[label] += err
                    per_round[label] = n / slot
                for label in labels:
                    ratios[label].append(per_round[label] / per_round["/healthz"])
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"one uvicorn worker, {args.concurrency} concurrent clients, {args.seconds:g} s per endpoint in "
          f"{args.rounds} interleaved rounds, {os.cpu_count()} CPU cores shared by server and clients")
    print(f"{'endpoint':42s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'non-200':>9s}"
          f"{'server CPU us/req':>19s}{'vs healthz (median round, min-max)':>38s}")
    for label in labels:
        rps = counts[label] / args.seconds
        r = ratios[label]
        spread = f"{statistics.median(r):.0%} ({min(r):.0%}-{max(r):.0%})"
        print(f"{label:42s}{rps:10,.0f}{percentile(latencies[label], 50) * 1000:10.2f}"
              f"{percentile(latencies[label], 99) * 1000:10.2f}{errors[label]:9d}"
              f"{cpu[label] / max(counts[label], 1) * 1e6:19.0f}{spread:>38s}")
    print("goal: estimate throughput >= 70 % of /healthz")


if __name__ == "__main__":
    main()
