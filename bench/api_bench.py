"""REST API throughput and latency against a running server (one uvicorn worker).

Starts ``uvicorn app.main:create_app --factory`` on a free port with a temporary data directory,
then drives it with concurrent keep-alive clients (asyncio streams) and prints requests/s and p50/p99 latency of
/healthz, /api/v1/estimate and /api/v1/capacity, measured in the same run. The ratio of estimate
to healthz throughput shows what an estimate costs on top of the HTTP stack (goal >= 70 %).

Run: python bench/api_bench.py [--seconds 5] [--concurrency 16]
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


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "TUNEFIT_DATA_DIR": data_dir}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
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


async def drive(url: str, method: str, path: str, bodies: list[bytes] | None, seconds: float,
                concurrency: int) -> tuple[int, list[float], int]:
    """(requests completed, latencies in s, non-200 answers) within ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = itertools.count()

    async def worker() -> None:
        nonlocal errors
        conn = Connection(host, int(port))
        await conn.open()
        try:
            while time.perf_counter() < stop:
                i = next(counter)
                start = time.perf_counter()
                status = await conn.request(method, path, bodies[i % len(bodies)] if bodies else b"")
                latencies.append(time.perf_counter() - start)
                errors += status != 200
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    settings = estimate_bodies()
    repeated = [json.dumps(b).encode() for b in settings]
    # Every body new (sequence length counts up), so no answer comes from the server's cache.
    unique = [json.dumps({**settings[i % len(settings)], "seq_len": 64 + i}).encode() for i in range(200_000)]
    capacity_bodies = [json.dumps({**b, "gpus": None}).encode() for b in settings]
    cases = [("/healthz", "GET", None, "/healthz"),
             ("/api/v1/estimate", "POST", repeated, f"estimate ({len(repeated)} settings, repeated)"),
             ("/api/v1/estimate", "POST", unique, "estimate (every setting new)"),
             ("/api/v1/capacity", "POST", capacity_bodies, f"capacity ({len(settings)} settings, repeated)"),
             ("/api/v1/capacity", "POST", unique, "capacity (every setting new)")]
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            asyncio.run(drive(url, "GET", "/healthz", None, 1.0, args.concurrency))  # warm-up
            results = {}
            for path, method, case_bodies, label in cases:
                n, lat, errors = asyncio.run(drive(url, method, path, case_bodies, args.seconds, args.concurrency))
                results[label] = (n / args.seconds, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000, errors)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"one uvicorn worker, {args.concurrency} concurrent clients, {args.seconds:g} s per endpoint, "
          f"{os.cpu_count()} CPU cores shared by server and clients")
    print(f"{'endpoint':42s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'non-200':>9s}{'vs healthz':>12s}")
    base = results["/healthz"][0]
    for label, (rps, p50, p99, errors) in results.items():
        print(f"{label:42s}{rps:10,.0f}{p50:10.2f}{p99:10.2f}{errors:9d}{rps / base:12.0%}")
    print("goal: estimate throughput >= 70 % of /healthz")


if __name__ == "__main__":
    main()
