"""Stage `predict` and the deployed model: raw texts -> label, class name and probabilities, without PyTorch.

The runtime here needs only ``tokenizers``, ``numpy`` and ``onnxruntime`` (plus ``pandas`` and ``mlflow`` for
the MLflow wrapper): it is shipped inside the MLflow model (``code_paths``), so the served model does not need
the rest of embalance or PyTorch. It reads a model folder written by ``embalance export``:

    models/<dataset>/
        encoder.onnx      token ids -> mean-pooled, L2-normalised sentence embedding (batch, 384)
        classifier.onnx   sentence embedding -> label (batch,), probabilities (batch, classes)
        tokenizer.json    the encoder's tokenizer (no padding; truncation at max_length)
        export.json       how it was made; its ``runtime`` section is what this module reads

    embalance predict --model models/sst2 --input reviews.csv --output predictions.csv
    embalance predict --model "models:/embalance-sst2@champion" < texts.txt > predictions.csv
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

ENCODER_FILE = "encoder.onnx"
CLASSIFIER_FILE = "classifier.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FILE = "export.json"
ARTIFACT_FILES = (ENCODER_FILE, CLASSIFIER_FILE, TOKENIZER_FILE, EXPORT_FILE)
TEXT_COLUMN = "text"


def _invalid(message: str) -> MlflowException:
    """An input error that the MLflow scoring server answers with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _preview(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def texts_from_input(model_input: Any) -> list[str]:
    """The texts in a list of strings, a 1-D array or Series of strings, or a table with a ``text`` column.

    Raises MlflowException (INVALID_PARAMETER_VALUE) naming the first bad value: a missing ``text`` column, a
    value that is not a string, or an empty (or whitespace-only) string.
    """
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise _invalid(
                f"The input table must have a {TEXT_COLUMN!r} column of strings, but its columns are "
                f"{[str(c) for c in model_input.columns]}."
            )
        values: Sequence[Any] = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, dict):
        if TEXT_COLUMN not in model_input:
            raise _invalid(f"The input must have a {TEXT_COLUMN!r} field holding a list of strings, but its fields are {sorted(map(str, model_input))}.")
        values = model_input[TEXT_COLUMN]
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, pd.Series | np.ndarray):
        if getattr(model_input, "ndim", 1) != 1:
            raise _invalid(f"The input must be a 1-D list of strings, but got an array of shape {model_input.shape}.")
        values = list(model_input)
    elif isinstance(model_input, list | tuple):
        values = list(model_input)
    else:
        raise _invalid(f"The input must be a list of strings or a table with a {TEXT_COLUMN!r} column, but got {type(model_input).__name__}: {_preview(model_input)}.")
    if not values:
        raise _invalid("The input holds no texts; send at least one non-empty string.")
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v):
            raise _invalid(f"Every text must be a string, but text {i} is missing ({_preview(v)}).")
        if not isinstance(v, str):
            raise _invalid(f"Every text must be a string, but text {i} is {type(v).__name__}: {_preview(v)}.")
        if not v.strip():
            raise _invalid(f"Every text must be a non-empty string, but text {i} is {v!r}.")
    return list(values)


def available_cpus() -> int:
    """CPUs this process may run on (ORT's own default counts physical cores, which halves throughput on SMT hosts).

    The same count as :func:`embalance.runtime.available_cpus`, written again on purpose: this file is shipped
    alone inside the MLflow model (``code_paths``, see ``stages/export.py``), where ``embalance.runtime`` does not
    exist. tests/test_serve.py checks that the two agree.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def length_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of each batch when texts are batched by length: longest first (ties in input order).

    Rows of similar length share a batch, so padding each batch to its longest row wastes little, and the first
    batch shows the peak memory. The one copy of this order: the embed stage, the export's checks and this
    runtime all batch with it (this file imports neither torch nor the rest of embalance).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, but got {batch_size}.")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` padded with ``pad_id`` to the batch's longest row and the ``attention_mask``: int64, (B, T)."""
    width = max(map(len, rows))
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return input_ids, mask


def encode_ids(session: Any, ids: Sequence[Sequence[int]], pad_id: int, *, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings (len(ids), dim), float32, from an encoder graph's ONNX Runtime session, in input order.

    The graph pools and normalises itself (``sentence_embedding`` is mean-pooled and L2-normalised inside
    encoder.onnx, by ``embalance.data.encoder.PooledEncoder``), so there is no pooling here.
    """
    with_token_types = "token_type_ids" in {i.name for i in session.get_inputs()}
    out: np.ndarray | None = None
    for rows in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_batch([ids[r] for r in rows], pad_id)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if with_token_types:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        emb = session.run(["sentence_embedding"], feed)[0]
        if out is None:
            out = np.empty((len(ids), emb.shape[1]), dtype=np.float32)
        out[rows] = emb
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


class OnnxTextClassifier:
    """Tokenizer + encoder graph + classifier graph: texts -> (labels, probabilities). No PyTorch."""

    def __init__(self, folder: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        missing = [f for f in ARTIFACT_FILES if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{str(folder)!r} is not an exported model folder: {', '.join(missing)} missing (run `embalance export`).")
        self.folder = folder
        self.runtime: dict[str, Any] = json.loads((folder / EXPORT_FILE).read_text())["runtime"]
        self.max_length = int(self.runtime["max_length"])
        self.class_names: list[str] = list(self.runtime["class_names"])
        self.pad_id = int(self.runtime["pad_id"])
        self.threads = int(self.runtime.get("intra_op_threads", 0) if threads is None else threads) or available_cpus()
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()  # we pad ourselves, per batch, to the longest text in it
        self.tokenizer.enable_truncation(max_length=self.max_length)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(folder / ENCODER_FILE), so, providers=providers)
        self.classifier = ort.InferenceSession(str(folder / CLASSIFIER_FILE), so, providers=providers)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings (len(texts), dim), float32, unit norm, in the order of ``texts``."""
        return encode_ids(self.encoder, self.tokenize(texts), self.pad_id, batch_size=batch_size)

    def classify(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        label, proba = self.classifier.run(["label", "probabilities"], {"sentence_embedding": np.ascontiguousarray(embeddings, dtype=np.float32)})
        return label, proba

    def predict(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int64, [n]) and class probabilities (float32, [n, classes]) of raw texts."""
        return self.classify(self.embed(texts, batch_size=batch_size))

    def predict_frame(self, texts: Sequence[str], *, batch_size: int = 64) -> pd.DataFrame:
        """One row per text: ``label``, ``class_name`` and ``probabilities`` (a list, in class order)."""
        labels, proba = self.predict(texts, batch_size=batch_size)
        return pd.DataFrame(
            {
                "label": labels.astype(np.int64),
                "class_name": [self.class_names[i] for i in labels.tolist()],
                "probabilities": [row.tolist() for row in proba.astype(np.float64)],
            }
        )


class EmbalanceTextModel(mlflow.pyfunc.PythonModel):
    """The MLflow model: a list (or ``text`` column) of raw texts -> label, class_name, probabilities.

    Everything it needs is in its artifacts (the two graphs, the tokenizer, export.json); at inference it uses
    tokenizers, numpy and onnxruntime only. ``intra_op_threads`` of export.json's runtime section sets ONNX
    Runtime's threads (0 = one per available CPU); the environment variable ``EMBALANCE_ORT_THREADS`` overrides it.
    """

    def load_context(self, context) -> None:  # context: mlflow PythonModelContext
        folder = Path(context.artifacts[ENCODER_FILE]).parent
        for name in ARTIFACT_FILES:  # each artifact is its own file; they all lie in one folder when logged together
            if Path(context.artifacts[name]).parent != folder:
                raise MlflowException(f"Artifact {name!r} is not beside {ENCODER_FILE!r}; log the model with `embalance export`.")
        env = os.environ.get("EMBALANCE_ORT_THREADS")
        self.classifier = OnnxTextClassifier(folder, threads=int(env) if env else None)

    # `model_input: pd.DataFrame`: what pyfunc passes after enforcing the logged signature (a `text` column). MLflow
    # infers no schema from a DataFrame hint (the signature stays the explicit one) and, with a hint, no longer warns
    # "Add type hints to the `predict` method" each time this class is defined.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.classifier.predict_frame(texts_from_input(model_input))


# ---------------------------------------------------------------------------------------------- batch prediction


def load_classifier(model: str, *, threads: int | None = None) -> OnnxTextClassifier:
    """An exported folder (models/<dataset>), an MLflow model folder, or an MLflow URI (models:/..., runs:/...)."""
    path = Path(model)
    if path.is_dir() and (path / EXPORT_FILE).is_file():
        return OnnxTextClassifier(path, threads=threads)
    if path.is_dir() and not (path / "MLmodel").is_file():
        raise FileNotFoundError(f"{model!r} is neither an exported model folder (with {EXPORT_FILE}) nor an MLflow model folder (with MLmodel).")
    if not path.is_dir() and ":/" not in model:
        raise FileNotFoundError(f"Model {model!r} is not a folder and not an MLflow URI such as 'models:/embalance-sst2@champion'.")
    if threads is not None:
        os.environ["EMBALANCE_ORT_THREADS"] = str(threads)
    pyfunc = mlflow.pyfunc.load_model(model)
    inner = pyfunc.unwrap_python_model()
    if not isinstance(getattr(inner, "classifier", None), OnnxTextClassifier):
        raise TypeError(f"{model!r} is an MLflow model, but not one logged by `embalance export`.")
    return inner.classifier


def _read_csv(source: str) -> pd.DataFrame:
    """A CSV file (``.gz`` too; ``-`` = stdin) as a table of strings, every row with the header's number of fields.

    pandas would take a row with one field too many as an index value and shift its text (``a gorgeous, witty
    movie`` unquoted reads as the text " witty movie"), or cut it; here that row is an error. Blank lines are skipped.
    """
    if source == "-":
        opened: Any = contextlib.nullcontext(sys.stdin)
    else:
        opened = (gzip.open if source.endswith(".gz") else open)(source, "rt", encoding="utf-8", newline="")
    with opened as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"The input CSV {source!r} is empty; it must have a header line with a {TEXT_COLUMN!r} column, then one row per text.")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"Every CSV row must have the header's {len(header)} field(s), but row {len(rows)} (line {reader.line_num}) has "
                    f"{len(row)}: {_preview(row)}; quote a text that holds a comma (\"a gorgeous, witty movie\")."
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=header, dtype=object)


def read_table(source: str, *, fmt: str = "auto") -> pd.DataFrame:
    """The input as a table with a ``text`` column: a CSV file as it is (every field read as text, so that its
    other columns are written back unchanged), or one text per line (blank lines skipped); ``-`` = stdin."""
    if fmt == "auto":
        fmt = "csv" if source.endswith((".csv", ".csv.gz")) else "lines"
    if fmt not in ("csv", "lines"):
        raise ValueError(f"The input format must be auto, csv or lines, but got {fmt!r}.")
    if fmt == "csv":
        table = _read_csv(source)
    else:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        table = pd.DataFrame({TEXT_COLUMN: [line for line in raw.splitlines() if line.strip()]})
    texts_from_input(table)  # a `text` column of non-empty strings, or an error naming the first bad row
    return table


def predict_texts(
    classifier: OnnxTextClassifier, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True
) -> pd.DataFrame:
    """label, class_name and one ``p_<class name>`` column per class, one row per text, in input order."""
    from tqdm.auto import tqdm

    texts = texts_from_input(list(texts))
    labels = np.empty(len(texts), dtype=np.int64)
    proba = np.empty((len(texts), len(classifier.class_names)), dtype=np.float32)
    with tqdm(total=len(texts), desc="predict", unit="text", disable=not progress, mininterval=0.5, file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            lab, pr = classifier.predict(texts[start : start + batch_size], batch_size=64)
            labels[start : start + len(lab)], proba[start : start + len(lab)] = lab, pr
            bar.update(len(lab))
    out = pd.DataFrame({"label": labels, "class_name": [classifier.class_names[i] for i in labels.tolist()]})
    for j, name in enumerate(classifier.class_names):
        out[f"p_{name}"] = proba[:, j]
    return out


def beside_input(table: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The input's columns, then the prediction columns, row by row. An input column named like a prediction
    column (e.g. a ``label`` column of true labels) is kept as ``input_<name>``."""
    if len(table) != len(predictions):
        raise ValueError(f"There must be one prediction per input row, but got {len(predictions)} for {len(table)} rows.")
    renamed = {c: f"input_{c}" for c in table.columns if c in predictions.columns}
    taken = [new for new in renamed.values() if new in table.columns or new in predictions.columns]
    if taken:
        raise ValueError(f"The input's columns {sorted(renamed)} would be renamed to {taken}, but it has columns of those names too; rename them.")
    return pd.concat([table.rename(columns=renamed).reset_index(drop=True), predictions.reset_index(drop=True)], axis=1)


def run(model: str, source: str = "-", output: str = "-", *, fmt: str = "auto", batch_size: int = 256, threads: int | None = 0, progress: bool = True) -> pd.DataFrame:
    """Read a table of texts, predict in batches, write the input's columns and the predictions as CSV (``-`` =
    stdout); returns what it wrote."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, but got {batch_size}.")
    classifier = load_classifier(model, threads=threads)
    table = read_table(source, fmt=fmt)
    predictions = predict_texts(classifier, table[TEXT_COLUMN].tolist(), batch_size=batch_size, progress=progress)
    result = beside_input(table, predictions)
    result.to_csv(sys.stdout if output == "-" else output, index=False, float_format="%.6g")
    return result
