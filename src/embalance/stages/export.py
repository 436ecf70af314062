"""Stage `export`: retrain the chosen configuration, export encoder and classifier to ONNX, log and register.

1. **The configuration.** ``results/<dataset>/best.json`` (written by the tuning stage) when it exists and
   ``export.use_best`` is true, else ``export.method`` / ``export.minority_size`` from params.yaml.
2. **Retraining** on the data of ``export.minority_size``: ``all`` (the default), every training row of the
   prepared data, nothing cut (best.json's minority size is then only informative); an integer, the imbalanced
   pool of the chosen minority size (best.json's, or that integer without it). With the chosen oversampler, in
   two passes:
   (a) the protocol's fold 0 (of ``cv.n_folds`` stratified folds, the same fold the sweep uses) is held out,
   the rest is oversampled and an MLP is trained with early stopping on the held-out slice: this picks the
   number of epochs and gives honest validation numbers; (b) the whole pool is oversampled and a fresh MLP
   (same seed) is trained for that many epochs. The slice is never both trained on and used for stopping.
3. **Export.** ``classifier.onnx`` (sentence_embedding -> label, probabilities) and ``encoder.onnx`` (input_ids,
   attention_mask -> sentence_embedding, mean pooling and L2 normalisation inside the graph), both traced with
   the TorchScript exporter (``dynamo=False``: its graph is the one ONNX Runtime's BERT optimiser fuses), both
   checked with ``onnx.checker`` and compared with PyTorch: the classifier on the test embeddings, the encoder
   on the dataset's real test texts. The encoder is kept plain or fused (ONNX Runtime's transformer
   optimiser: Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) when it is within tolerance,
   else the plain one; ``export.json`` records the choice, the timings and the parity numbers.
4. **MLflow.** One pyfunc model (texts -> label, class_name, probabilities; tokenizers + numpy + onnxruntime
   at inference), logged as code (``serving/mlflow_model.py``: nothing pickled) with a signature and an input
   example, registered as ``<registered_model_prefix>-<dataset>``, alias ``champion`` moved to the new version.

    embalance export --dataset sst2          # writes models/sst2/, logs and registers the model
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embalance.errors import ConfigError, EmbalanceError, InfeasibleResampling
from embalance.experiment.methods import parse_method, run_params
from embalance.experiment.metrics import test_metrics
from embalance.experiment.model import MLP
from embalance.experiment.recipe import apply_refit, draw_pool, fold_job
from embalance.experiment.resample import ResampleInfo
from embalance.experiment.train import TrainConfig, fit_mlp, predict_proba
from embalance.io import default_dir, ensure_writable_dir, file_md5, write_json
from embalance.params import section, set_values, validate
from embalance.runtime import available_cpus, seed_everything
from embalance.serving import predict as runtime

ENCODER_GRAPHS = ("auto", "fused", "plain")
OPSET = 17
PROBA_ATOL = 1e-4  # classifier: ONNX vs PyTorch probabilities
MIN_COSINE = 0.9999  # encoder: ONNX vs PyTorch embeddings
CHAMPION = "champion"
VERSION_METRICS = ("test_balanced_accuracy", "test_accuracy", "test_macro_f1")  # also tags of the registered version
CHECKPOINT_FILE = "classifier.pt"  # the same MLP as a PyTorch checkpoint (not part of the served model)


class ExportError(EmbalanceError):
    """An exported graph does not reproduce the PyTorch model within tolerance."""


# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ExportSettings:
    method: str = "smote"
    minority_size: int | str = "all"  # "all": every training row | an integer: the tuned (best.json) or this size
    use_best: bool = True
    registered_model_prefix: str = "embalance"
    encoder_graph: str = "auto"  # auto | fused | plain
    intra_op_threads: int = 1  # ONNX Runtime threads per served model process (uvicorn runs one per two CPUs by default); 0 = all CPUs
    parity_texts: int = 0  # test texts the encoder is checked on; 0 = all

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ExportSettings:
        """The `export:` section, checked by the params schema (ConfigError when it is missing or breaks a rule)."""
        return cls(**section(params, "export").model_dump())


@dataclass(frozen=True)
class Choice:
    method: str
    minority_size: int | None  # the tuned (best.json) or given size; only informative when ``data`` is "all"
    overrides: dict[str, Any]
    source: str  # "best.json: <path>" or "params.yaml export section"
    data: int | str = "all"  # what the model is trained on: "all" training rows, or the pool of this minority size


def choose(params: Mapping[str, Any], dataset: str, best_path: Path | None) -> tuple[dict[str, Any], Choice]:
    """The configuration to export and the params with its overrides applied (validated)."""
    settings = ExportSettings.from_params(params)
    if settings.use_best and best_path is not None and best_path.is_file():
        try:
            best = json.loads(best_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{str(best_path)!r} is not valid JSON: {e}") from e
        if not isinstance(best, dict) or not {"method", "minority_size"} <= set(best):
            raise ConfigError(f"{str(best_path)!r} must be an object with `method`, `minority_size` and optional `overrides`, but got {best!r}.")
        if best.get("dataset", dataset) != dataset:
            raise ConfigError(f"{str(best_path)!r} is for dataset {best['dataset']!r}, not {dataset!r}.")
        overrides = best.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"`overrides` in {str(best_path)!r} must map dotted params to values, but got {overrides!r}.")
        choice = Choice(str(best["method"]), best["minority_size"], dict(overrides), f"best.json: {best_path}")
    else:
        given = None if settings.minority_size == "all" else settings.minority_size
        choice = Choice(settings.method, given, {}, "params.yaml export section")
    choice = dataclasses.replace(choice, data="all" if settings.minority_size == "all" else choice.minority_size)
    effective = set_values(params, dict(sorted(choice.overrides.items())), source=choice.source)
    chosen = {"export.method": choice.method, "export.minority_size": "all" if choice.minority_size is None else choice.minority_size}
    try:  # the chosen method and size obey the rules of `export.method` and `export.minority_size`
        validate(set_values(effective, chosen))
    except ConfigError as e:
        raise ConfigError(f"The configuration to export ({choice.source}): {e}") from None
    return effective, choice


# ---------------------------------------------------------------------------------------------------- retraining


@dataclass
class Retrained:
    model: MLP
    epochs: int  # chosen on the held-out slice (pass a), then trained on the whole pool (pass b)
    resample_info: ResampleInfo  # of the whole pool (pass b)
    metrics: dict[str, float] = field(default_factory=dict)


def retrain(
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    params: Mapping[str, Any],
    dataset: str,
    method: str,
    size: int | str,
    n_classes: int,
) -> Retrained:
    """Train the exported MLP on ``size``'s data: "all" training rows, or the imbalanced pool of that minority size
    (see the module docstring for the two passes)."""
    pool = draw_pool(X_train, y_train, params=params, dataset=dataset, size=size)
    tr, va = pool.folds[0]
    config = dataclasses.replace(TrainConfig.from_params(params["train"]), both_readings=False)
    spec = parse_method(method)
    key = (params["seed"], dataset, size, "export")
    held_out = (pool.X[va], pool.y[va])
    recipe = {"aug": params["augment"], "key": key, "minority_classes": params["imbalance"]["minority_classes"]}
    try:
        job_a = fold_job(spec, (pool.X[tr], pool.y[tr]), held_out, sampler_suffix=("a",), **recipe)
        job_b = fold_job(spec, (pool.X, pool.y), held_out, **recipe)
    except InfeasibleResampling as e:
        what = "all training rows" if size == "all" else f"minority size {size}"
        raise ConfigError(f"The configuration to export ({method}, {what}) cannot run: {e.reason}") from e
    fit_a = fit_mlp(job_a.X, job_a.y, *held_out, n_classes=n_classes, config=config, seed=job_a.seed, options=job_a.options)
    # The epoch count: early stopping's best epoch on the held-out slice, or the fixed budget.
    epochs = max(fit_a.best_epoch, 1) if config.early_stopping else config.fixed_epochs
    # Pass b: exactly that many epochs on the whole pool, the last epoch's weights kept (then +refit's output layer).
    fixed = dataclasses.replace(config, early_stopping=False, fixed_epochs=epochs)
    fit_b = apply_refit(job_b, fit_mlp(job_b.X, job_b.y, *held_out, n_classes=n_classes, config=fixed, seed=job_b.seed, options=job_b.options), params)
    best = max(fit_a.best_epoch, 1) - 1
    metrics = {
        "val_loss": fit_a.history["val_loss"][best],
        "val_balanced_accuracy": fit_a.history["val_balanced_accuracy"][best],
        "epochs": float(epochs),
        "epochs_kept": float(fit_b.epochs_run),
        "n_pool": float(len(pool.index)),
        "n_trained": float(len(job_b.y)),
    }
    return Retrained(fit_b.model.cpu().eval(), epochs, job_b.info, metrics)


def trained_on(choice: Choice, info: ResampleInfo, class_names: Sequence[str]) -> dict[str, Any]:
    """What the exported model saw: "all" rows or a minority size, real and synthetic rows per class, in words too."""
    per_class = ", ".join(f"{class_names[c]}: {n} real + {info.n_synthetic.get(c, 0)} synthetic" for c, n in sorted(info.n_real.items()))
    rows = "all training rows" if choice.data == "all" else f"the pool of minority size {choice.data}"
    return {"data": choice.data, "n_real": info.n_real, "n_synthetic": info.n_synthetic, "skipped": info.skipped, "description": f"{rows} ({per_class})"}


# ------------------------------------------------------------------------------------------------------ ONNX


class _Classifier(nn.Module):
    """MLP + softmax + argmax, so the graph answers with a label and the class probabilities."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proba = torch.softmax(self.mlp(x), dim=1)  # (B, C)
        return proba.argmax(dim=1), proba  # (B,) int64, (B, C)


def _torch_export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str], axes: dict[str, dict[int, str]]) -> None:
    import warnings

    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, whose graph ORT does not fuse (see the docstring).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The encoder's one advanced index is transformers' attention-mask construction indexing the padding mask by
        # token positions (an arange: never negative), so the exporter's caveat about negative indices cannot apply;
        # the graph is then checked against PyTorch on real texts (export_encoder).
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing", category=UserWarning)
        torch.onnx.export(
            module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True
        )


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or available_cpus()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_classifier(model: MLP, path: Path, X_check: np.ndarray) -> dict[str, Any]:
    """Write ``classifier.onnx`` and check it against PyTorch on ``X_check`` (labels equal, probabilities 1e-4)."""
    model = model.cpu().eval()
    example = torch.as_tensor(np.asarray(X_check[:2], dtype=np.float32))
    if example.shape[0] < 2:
        raise ValueError(f"The classifier export needs at least 2 check rows, but got {len(X_check)}.")
    _torch_export(
        _Classifier(model), (example,), path, ["sentence_embedding"], ["label", "probabilities"],
        {"sentence_embedding": {0: "batch"}, "label": {0: "batch"}, "probabilities": {0: "batch"}},
    )  # fmt: skip
    _check(path)
    ref = predict_proba(model, X_check)
    label, proba = _session(path, 1).run(["label", "probabilities"], {"sentence_embedding": np.asarray(X_check, dtype=np.float32)})
    if label.dtype != np.int64 or proba.dtype != np.float32 or proba.shape != ref.shape:
        raise ExportError(f"classifier.onnx answers label {label.dtype} and probabilities {proba.dtype}{proba.shape}; expected int64 and float32{ref.shape}.")
    diff = float(np.abs(proba - ref).max())
    agree = int(np.sum(label == ref.argmax(1)))
    if agree != len(ref) or diff > PROBA_ATOL:
        raise ExportError(f"classifier.onnx disagrees with PyTorch: {len(ref) - agree} of {len(ref)} labels differ, max |Δp| = {diff:.2e} (allowed {PROBA_ATOL}).")
    return {"rows": len(ref), "labels_agree": agree, "max_abs_diff_probabilities": diff}


def write_tokenizer(model_path: str, out: Path, max_length: int) -> int:
    """The encoder's tokenizer.json with padding off and truncation at ``max_length``; returns the pad id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    tok.no_padding()  # the shipped file pads to 128: the runtime pads per batch instead
    tok.enable_truncation(max_length=max_length)
    tok.save(str(out), pretty=True)
    pad = tok.token_to_id("[PAD]")
    return 0 if pad is None else int(pad)


def _timings(path: Path, feeds_single: list[dict[str, np.ndarray]], feeds_batch: list[dict[str, np.ndarray]], threads: int) -> dict[str, float]:
    """p50 of one short text (1 thread) and texts/s in batches (``threads``) for one encoder graph."""
    s1 = _session(path, 1)
    for f in feeds_single[:5]:
        s1.run(None, f)
    lat = []
    for f in feeds_single:
        t0 = time.perf_counter()
        s1.run(None, f)
        lat.append(time.perf_counter() - t0)
    sb = _session(path, threads)
    sb.run(None, feeds_batch[0])
    t0 = time.perf_counter()
    n = sum(sb.run(None, f)[0].shape[0] for f in feeds_batch)
    return {"single_p50_ms": float(np.median(lat) * 1e3), "batch_texts_per_s": n / (time.perf_counter() - t0)}


def export_encoder(
    model_name: str,
    out_dir: Path,
    *,
    max_length: int,
    check_texts: Sequence[str],
    graph: str = "auto",
    threads: int = 0,
) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``tokenizer.json`` to ``out_dir``, checked against embed.SentenceEncoder.

    Both the plain traced graph and ONNX Runtime's fused one are checked on ``check_texts``; ``graph`` picks one
    (``auto``: the fused graph when it is within tolerance). Returns what export.json records.
    """
    from onnxruntime.transformers.optimizer import optimize_model
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from embalance.data.embed import SentenceEncoder, resolve_model
    from embalance.data.encoder import PooledEncoder

    if graph not in ENCODER_GRAPHS:
        raise ConfigError(f"`graph` must be one of {', '.join(ENCODER_GRAPHS)}, but got {graph!r}.")
    if len(check_texts) < 2:
        raise ValueError(f"The encoder check needs at least 2 real texts, but got {len(check_texts)}.")
    path = resolve_model(model_name)
    reference = SentenceEncoder(model_name, max_length=max_length, device="cpu")
    ref = reference.encode(list(check_texts), batch_size=64, progress=False)
    cfg = reference.model.config
    pad_id = write_tokenizer(path, out_dir / runtime.TOKENIZER_FILE, max_length)
    del reference

    # A fresh eager-attention copy for tracing: its matmul/softmax attention is the pattern ORT's optimiser fuses.
    model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    examples = ["A gorgeous, witty, seductive movie.", "bad"]  # a batch of 2 of different lengths: padding is traced
    enc = Tokenizer.from_file(str(out_dir / runtime.TOKENIZER_FILE))
    input_ids, mask = (torch.from_numpy(a) for a in runtime.pad_batch([e.ids for e in enc.encode_batch(examples)], pad_id))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    with tempfile.TemporaryDirectory(prefix="embalance-export-") as tmp:
        plain, fused = Path(tmp) / "plain.onnx", Path(tmp) / "fused.onnx"
        _torch_export(PooledEncoder(model), (input_ids, mask), plain, ["input_ids", "attention_mask"], ["sentence_embedding"], axes)
        del model
        _check(plain)
        optimized = optimize_model(str(plain), model_type="bert", num_heads=int(cfg.num_attention_heads), hidden_size=int(cfg.hidden_size), opt_level=0)
        optimized.save_model_to_file(str(fused))
        _check(fused)
        fusions = {k: int(v) for k, v in sorted(optimized.get_fused_operator_statistics().items()) if v}

        report: dict[str, Any] = {"fusions": fusions, "graphs": {}}
        tokenized = [e.ids for e in enc.encode_batch(list(check_texts))]
        for name, p in (("plain", plain), ("fused", fused)):
            shutil.copyfile(p, out_dir / runtime.ENCODER_FILE)  # the runtime reads the folder
            emb = _runtime_embeddings(out_dir, tokenized, pad_id)
            cos = np.sum(emb * ref, axis=1)
            report["graphs"][name] = {"min_cosine": float(cos.min()), "max_abs_diff": float(np.abs(emb - ref).max()), "md5": file_md5(p)}
        order = np.argsort([len(x) for x in tokenized], kind="stable")
        short = [_feed([tokenized[i]], pad_id) for i in order[: min(50, len(order))]]
        batches = [_feed([tokenized[i] for i in order[s : s + 64]], pad_id) for s in range(0, min(len(order), 512), 64)]
        for _ in range(2):  # alternate, so that a burst of load on the machine hits both
            for name, p in (("plain", plain), ("fused", fused)):
                t = _timings(p, short, batches, threads)
                g = report["graphs"][name]
                g["single_p50_ms"] = min(g.get("single_p50_ms", np.inf), t["single_p50_ms"])
                g["batch_texts_per_s"] = max(g.get("batch_texts_per_s", 0.0), t["batch_texts_per_s"])
        chosen, why = _choose_graph(report["graphs"], graph)
        shutil.copyfile(fused if chosen == "fused" else plain, out_dir / runtime.ENCODER_FILE)
    report.update(
        chosen=chosen, reason=why, rows_checked=len(check_texts), max_length=max_length, pad_id=pad_id, dim=int(cfg.hidden_size), opset=OPSET,
        session_graph_optimization_level="ORT_ENABLE_ALL",
    )  # fmt: skip
    return report


def _choose_graph(graphs: dict[str, dict[str, Any]], graph: str) -> tuple[str, str]:
    """The encoder graph to ship (plain or fused) and why, from the parity and timings of both."""
    ok = {n: g["min_cosine"] >= MIN_COSINE for n, g in graphs.items()}
    if not any(ok.values()):
        raise ExportError(f"Neither encoder graph matches PyTorch: min cosine {graphs['plain']['min_cosine']:.6f} (plain), {graphs['fused']['min_cosine']:.6f} (fused); required {MIN_COSINE}.")
    if graph != "auto":
        if not ok[graph]:
            raise ExportError(f"The {graph} encoder graph does not match PyTorch: min cosine {graphs[graph]['min_cosine']:.6f} < {MIN_COSINE}.")
        return graph, f"export.encoder_graph={graph}"
    if not ok["fused"]:
        return "plain", "the fused graph is outside tolerance"
    # Not by timing: on a busy 2-core machine the two graphs' p50 latencies came within 10% of each other and the
    # choice flipped from one export to the next, and with it the exported bytes. The timings are still recorded.
    pf, pp = graphs["fused"]["single_p50_ms"], graphs["plain"]["single_p50_ms"]
    return "fused", f"within tolerance (single-text p50 {pf:.2f} ms fused vs {pp:.2f} ms plain, recorded, not used to choose)"


def _feed(rows: list[list[int]], pad_id: int) -> dict[str, np.ndarray]:
    input_ids, mask = runtime.pad_batch(rows, pad_id)
    return {"input_ids": input_ids, "attention_mask": mask}


def _runtime_embeddings(folder: Path, tokenized: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Embeddings from encoder.onnx in ``folder``, batched by length as the deployed runtime batches them."""
    return runtime.encode_ids(_session(folder / runtime.ENCODER_FILE, 0), tokenized, pad_id, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------- MLflow


MODEL_CODE = Path(runtime.__file__).with_name("mlflow_model.py")  # the logged model: builds EmbalanceTextModel


def model_name(prefix: str, dataset: str) -> str:
    return f"{prefix}-{dataset}"


def pip_requirements() -> list[str]:
    """What the served model imports: mlflow (the pyfunc), pandas, numpy, tokenizers, onnxruntime. No torch."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "tokenizers", "onnxruntime")]


def _runtime_code(tmp: Path) -> Path:
    """The runtime module alone, at its own import path inside a package ``embalance`` (shipped as code_paths).

    The logged model is code (``serving/mlflow_model.py``) that imports ``embalance.serving.predict``, so the
    shipped file must sit at that module's path; nothing else of embalance goes with it.
    """
    *packages, module = runtime.__name__.split(".")  # embalance, serving / predict
    for level in range(1, len(packages) + 1):
        folder = tmp.joinpath(*packages[:level])
        folder.mkdir()
        (folder / "__init__.py").write_text(f'"""The serving runtime of embalance ({runtime.__name__} only)."""\n')
    shutil.copyfile(runtime.__file__, tmp.joinpath(*packages) / f"{module}.py")
    return tmp / packages[0]


def version_description(choice: Any, training: Mapping[str, Any], test: Mapping[str, float], n_test: int, data: Mapping[str, str]) -> str:
    """What the registered version says of itself: method, data, test score, and the hashes of the data it saw."""
    text = (f"{choice.method} trained on {training['description']} ({choice.source}). Balanced test accuracy "
            f"{test['test_balanced_accuracy']:.4f} on {n_test} held-out test rows.")  # fmt: skip
    hashes = [f"{what} {data[key]}" for what, key in (("embeddings", "embalance.data.dvc_lock_md5"), ("prepared data", "embalance.data.prepared_dvc_md5")) if key in data]
    if not hashes and "embalance.data.train_md5" in data:  # no dvc.lock lists them: the files' own MD5
        hashes = [f"embeddings (train.npy MD5) {data['embalance.data.train_md5']}"]
    return text + (f" Data: {', '.join(hashes)}." if hashes else "")


def log_and_register(
    model_dir: Path,
    *,
    dataset: str,
    prefix: str,
    run_params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    alias: str = CHAMPION,
    version_tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> Any:
    """Log ``model_dir`` as one pyfunc model in a run ``export <dataset>``, register it and move ``alias`` to it.

    The tracking URI and experiment must be set already (tracking.setup). Returns the new ModelVersion.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    from embalance import tracking

    clf = runtime.OnnxTextClassifier(model_dir)
    example = pd.DataFrame({runtime.TEXT_COLUMN: ["A gorgeous, witty, seductive movie.", "The plot is thin and the acting is wooden."]})
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", runtime.TEXT_COLUMN)]),
        outputs=Schema([ColSpec("long", "label"), ColSpec("string", "class_name"), ColSpec(Array("double"), "probabilities")]),
    )
    name = model_name(prefix, dataset)
    with tempfile.TemporaryDirectory(prefix="embalance-code-") as tmp, tracking.parent_run(f"export {dataset}", tags={**(tags or {}), "embalance.run_type": "export"}) as run:
        if run_params:
            mlflow.log_params({k: str(v) for k, v in run_params.items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_dict(json.loads((model_dir / runtime.EXPORT_FILE).read_text()), "export.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MODEL_CODE,  # models from code: MLflow stores the file, not a pickled object
            artifacts={f: str(model_dir / f) for f in runtime.ARTIFACT_FILES},
            code_paths=[str(_runtime_code(Path(tmp)))],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=name,
            metadata={"class_names": clf.class_names, "dataset": dataset},
        )
        if metrics:  # on the logged model too: MLflow 3 shows them on the model and its registered version
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=info.model_id)
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(name, alias, version)
        # The version links back to its run and to the data it was trained on (the hashes DVC records for them).
        links = {k: v for k, v in (tags or {}).items() if k.startswith("embalance.data.") or k in ("embalance.git_commit", "embalance.dataset")}
        headline = {f"metric.{k}": f"{float(v):.6g}" for k, v in (metrics or {}).items() if k in VERSION_METRICS}
        for key, value in {"embalance.run_id": run.info.run_id, **links, **headline, **(version_tags or {})}.items():
            client.set_model_version_tag(name, version, key, value)
        if description:
            client.update_model_version(name, version, description=f"{description} Logged by run {run.info.run_id}.")
        return client.get_model_version(name, version)


# ------------------------------------------------------------------------------------------------------ stage


def run(
    params: Mapping[str, Any],
    dataset: str,
    *,
    embeddings_dir: Path | None = None,
    prepared_dir: Path | None = None,
    results_dir: Path | None = None,
    out_dir: Path | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """The whole stage; returns what it wrote to ``<out_dir>/export.json``."""
    import pandas as pd

    from embalance import tracking
    from embalance.data.embeddings import load_embeddings

    settings = ExportSettings.from_params(params)
    out_dir = ensure_writable_dir(out_dir or default_dir("models", dataset))
    prepared_dir = prepared_dir or default_dir("prepared", dataset)
    results_dir = results_dir or default_dir("results", dataset)
    effective, choice = choose(params, dataset, results_dir / "best.json")
    emb = load_embeddings(dataset, embeddings_dir, prepared_dir)
    texts = pd.read_parquet(prepared_dir / "test.parquet")["text"].tolist()
    seed_everything(effective["seed"])

    t0 = time.perf_counter()
    fit = retrain(emb.X_train, emb.y_train, params=effective, dataset=dataset, method=choice.method, size=choice.data, n_classes=emb.n_classes)
    test = test_metrics(predict_proba(fit.model, emb.X_test), emb.y_test, emb.n_classes)
    classifier = export_classifier(fit.model, out_dir / runtime.CLASSIFIER_FILE, emb.X_test)
    torch.save(fit.model.checkpoint(), out_dir / CHECKPOINT_FILE)  # the PyTorch reference (benchmarks/serve.py)
    check = texts[: settings.parity_texts] if settings.parity_texts else texts
    encoder = export_encoder(
        effective["embed"]["model"], out_dir, max_length=effective["embed"]["max_length"], check_texts=check,
        graph=settings.encoder_graph,
    )  # fmt: skip
    record: dict[str, Any] = {
        "dataset": dataset,
        "configuration": {"method": choice.method, "minority_size": choice.minority_size, "overrides": choice.overrides, "source": choice.source},
        "training": {**fit.metrics, **trained_on(choice, fit.resample_info, list(emb.class_names))},
        "test": test,
        "classifier": classifier,
        "encoder": encoder,
        "runtime": {
            "max_length": encoder["max_length"],
            "pad_id": encoder["pad_id"],
            "class_names": list(emb.class_names),
            "intra_op_threads": settings.intra_op_threads,
            "encoder_graph": encoder["chosen"],
        },
        "files": {f: file_md5(out_dir / f) for f in (runtime.ENCODER_FILE, runtime.CLASSIFIER_FILE, runtime.TOKENIZER_FILE)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out_dir / runtime.EXPORT_FILE, record)
    # The end-to-end runtime (tokenizers + both graphs) must give the PyTorch model's labels on the test texts.
    if len(texts) == len(emb.y_test):
        onnx_labels, _ = runtime.OnnxTextClassifier(out_dir).predict(check)
        torch_labels = predict_proba(fit.model, emb.X_test[: len(check)]).argmax(1)
        record["end_to_end_label_agreement"] = float(np.mean(onnx_labels == torch_labels))
        write_json(out_dir / runtime.EXPORT_FILE, record)
    print(
        f"export {dataset}: {choice.method} on {record['training']['description']} ({choice.source}); test balanced accuracy {test['test_balanced_accuracy']:.4f}; "
        f"encoder {encoder['chosen']} (min cosine {encoder['graphs'][encoder['chosen']]['min_cosine']:.6f}); -> {out_dir}"
    )
    if register:
        tracking.setup(effective)
        # Params under their params.yaml keys (the effective ones: params.yaml with best.json's overrides applied, as on
        # cell and trial runs); what was chosen from them (the source, the encoder graph `auto` picked) as tags.
        emb_tags = {**tracking.git_info(), **emb.tags, "embalance.dataset": dataset, "embalance.source": choice.source, "embalance.encoder_graph": encoder["chosen"]}
        flat = {**run_params(effective, dataset, choice.method, choice.minority_size if choice.minority_size is not None else choice.data, draw=None), "data": choice.data,
                **{f"export.{k}": v for k, v in effective.get("export", {}).items()}}  # fmt: skip
        metrics = {**{k: v for k, v in test.items() if np.isfinite(v)}, **fit.metrics, "encoder_min_cosine": encoder["graphs"][encoder["chosen"]]["min_cosine"],
                   "classifier_max_abs_diff": classifier["max_abs_diff_probabilities"]}  # fmt: skip
        training = record["training"]
        seen = {"embalance.data": str(choice.data), "embalance.n_real": json.dumps(training["n_real"]), "embalance.n_synthetic": json.dumps(training["n_synthetic"])}
        mv = log_and_register(
            out_dir, dataset=dataset, prefix=settings.registered_model_prefix, run_params=flat, metrics=metrics, tags=emb_tags, version_tags=seen,
            description=version_description(choice, training, test, len(emb.y_test), emb.tags),
        )  # fmt: skip
        record["registered"] = {"name": mv.name, "version": str(mv.version), "alias": CHAMPION, "run_id": mv.run_id}
        print(f"export {dataset}: registered {mv.name} version {mv.version} (alias {CHAMPION})")
    return record
