"""The `embalance` command: one sub-command per pipeline stage, plus `pipeline` and `cell`.

    embalance validate                         # DVC stage `validate`: params.yaml checked before any stage runs
    embalance prepare  --dataset sst2          # DVC stage `prepare`
    embalance embed    --dataset sst2          # DVC stage `embed`
    embalance sweep    --dataset sst2          # DVC stage `sweep`
    embalance tune     --dataset sst2          # DVC stage `tune`: Optuna studies, best.json
    embalance export   --dataset sst2          # DVC stage `export`: ONNX encoder + classifier, registered in MLflow
    embalance report                           # DVC stage `report`: tables, paired tests, figures -> reports/
    embalance predict  --model models/sst2 --input texts.csv   # label texts with an exported or registered model
    embalance serve    --model "models:/embalance-sst2@champion"   # HTTP server: MLflow's scoring app, hardened, N workers
    embalance pipeline                         # `dvc repro` (with overrides: `dvc exp run -S`) under one MLflow run
    embalance cell --dataset sst2 --method smote --size 64   # one cell (of draw 0; --draw r for another), tracked

Every sub-command takes ``--params params.yaml`` and any number of ``--set section.key=value`` overrides. The
folders a stage reads and writes are options too (dvc.yaml passes each of them); their defaults are the project's
layout (``embalance.io.LAYOUT``). `embalance COMMAND --help` describes a command and its options.

A bad option, parameter, params file or dataset is reported in one line on stderr, before any work, and the
command exits with status 2; a stage that fails leaves no empty output folder behind.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from embalance import __version__
from embalance.errors import ConfigError, EmbalanceError
from embalance.io import check_dataset, default_dir, removed_if_left_empty
from embalance.params import SAMPLERS
from embalance.server import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES

STAGES = ("validate", "prepare", "embed", "sweep", "tune", "export", "report", "predict", "serve", "pipeline", "cell")
# The folder a stage reads, per sub-command (a key of embalance.io.LAYOUT): a dataset whose inputs exist is accepted.
READS = {"embed": "prepared", "sweep": "embeddings", "tune": "embeddings", "cell": "embeddings", "export": "embeddings"}


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (and status 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`).\n")


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a parameter, e.g. --set cv.n_folds=5 (repeatable, or several in one separated by ';'; an empty value is ignored)")


def _dirs(ap: argparse.ArgumentParser, *kinds: str, out: str = "") -> None:
    """``--<kind> DIR`` options for the folders a stage touches; the default is the layout's folder for the dataset."""
    helps = {
        "prepared": "prepared data folder to read (default: data/prepared/<dataset>)",
        "embeddings": "embeddings folder to read (default: data/embeddings/<dataset>)",
        "results": "results folder to read best.json from (default: results/<dataset>)",
        "out": f"output folder (default: {out})",
    }
    for kind in kinds:
        ap.add_argument(f"--{kind}", type=Path, default=None, metavar="DIR", help=helps[kind])


def _split(raw: str) -> list[str]:
    return [d.strip() for d in raw.split(",") if d.strip()]


def _list_override(key: str, raw: str) -> list[str]:
    return [f"{key}=[{raw}]"] if raw.strip() else []


# ------------------------------------------------------------------------------------------- the sub-commands
def _validate(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import validate

    validate.run(params, args.out)


def _prepare(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.data import prepare

    prepare.run(params, args.dataset, out_dir=args.out)


def _embed(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.data import embed

    embed.run(params, args.dataset, prepared_dir=args.prepared, out_dir=args.out, force=not args.if_changed)


def _sweep(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import sweep

    sweep.run(params, args.dataset, out_dir=args.out, embeddings_dir=args.embeddings, prepared_dir=args.prepared)


def _tune(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import tune

    if args.n_jobs < 1:
        raise ConfigError(f"--n-jobs must be >= 1, but got {args.n_jobs}.")
    tune.run(
        params, args.dataset, n_jobs=args.n_jobs, worker_only=args.worker_only,
        out_dir=args.out, embeddings_dir=args.embeddings, prepared_dir=args.prepared,
    )  # fmt: skip


def _export(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import export

    export.run(
        params, args.dataset, register=not args.no_register,
        out_dir=args.out, prepared_dir=args.prepared, embeddings_dir=args.embeddings, results_dir=args.results,
    )  # fmt: skip


def _report(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import report

    report.run(
        params, _split(args.datasets) or params["data"]["datasets"],
        results_dir=args.results, out_dir=args.out, embeddings_dir=args.embeddings or default_dir("embeddings"),
        models_dir=args.models or default_dir("models"),
    )  # fmt: skip


def _predict(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """`embalance predict`: the one command line of the serving runtime (embalance.serving.predict.run)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from embalance import tracking
    from embalance.serving import predict

    mlflow.set_tracking_uri(args.tracking_uri or tracking.tracking_uri(params))
    try:
        predict.run(args.model, args.input, args.output, fmt=args.fmt, batch_size=args.batch_size, threads=args.threads, progress=not args.no_progress)
    except (MlflowException, FileNotFoundError, ValueError, TypeError) as e:  # TypeError: an MLflow model not logged by `embalance export`
        print(f"embalance predict: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """`embalance serve`: embalance.server.app.serve until Ctrl-C or SIGTERM (a normal stop: exit status 0)."""
    import mlflow

    from embalance import tracking
    from embalance.server.app import ServeSettings, serve

    settings = ServeSettings(
        model=args.model, host=args.host, port=args.port, workers=args.workers,
        max_body_bytes=args.max_body_bytes, body_timeout=args.body_timeout,
    )  # fmt: skip
    mlflow.set_tracking_uri(args.tracking_uri or tracking.tracking_uri(params))
    try:
        serve(settings)
    except KeyboardInterrupt:  # uvicorn re-raises the signal that stopped it, after a graceful shutdown
        print("embalance serve: stopped.", file=sys.stderr)
    return 0


def _cell(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import sweep

    if args.draw < 0:
        raise ConfigError(f"--draw must be an integer >= 0 (0: the single-draw protocol's pool), but got {args.draw}.")
    name = f"{args.method}-n{args.size}" + (f"-draw{args.draw}" if args.draw else "")
    out = (args.out or default_dir("results", args.dataset) / "cells") / name
    cells = sweep.run(params, args.dataset, out_dir=out, embeddings_dir=args.embeddings, prepared_dir=args.prepared, draws=[args.draw])
    print(cells.drop(columns=["mlflow_run_id"]).T.to_string(header=False))


def _pipeline(args: argparse.Namespace, params: dict[str, Any]) -> None:
    from embalance.stages import pipeline

    cmd = pipeline.run(args.params, _overrides(args), dry_run=args.dry_run)
    if args.dry_run:
        print(" ".join(["dvc", *cmd[1:]]))


_SEPARATOR = re.compile(r";\s*(?=[A-Za-z_][\w.]*=)")


def _overrides(args: argparse.Namespace) -> list[str]:
    """The sub-command's own options that are params overrides, after the user's ``--set``s."""
    # MLproject passes `--set ''` when `-P set=...` is not given, and `mlflow run` takes one `-P set=` only: several
    # overrides go in one value, separated by `;` (a `;` followed by the next `key=`).
    out = [o.strip() for raw in args.overrides for o in _SEPARATOR.split(raw) if o.strip()]
    if args.command == "pipeline":
        out += _list_override("data.datasets", args.datasets)
        out += _list_override("augment.methods", args.methods)
        out += _list_override("imbalance.sizes", args.sizes)
    elif args.command == "cell":
        out += [f"augment.methods=[{args.method}]", f"imbalance.sizes=[{args.size}]"]
    elif args.command == "tune":
        out += _list_override("tune.sizes", args.sizes)
        out += [f"tune.n_trials={args.n_trials}"] if args.n_trials is not None else []
        out += [f"tune.storage={args.storage}"] if args.storage else []
        out += [f"tune.sampler={args.sampler}"] if args.sampler else []
    return out


# ------------------------------------------------------------------------------------------------ the parser
# Each sub-command: a one-line summary (the list of `embalance --help`) and what it reads and writes (its --help).
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("check params.yaml (schema, known datasets) and change nothing",
                 "Check the params file against the schema (unknown keys, types, ranges) and that every dataset of "
                 "data.datasets can be read; with --out, write a fixed line there (DVC's first stage: a bad params.yaml "
                 "stops `dvc repro` before DVC removes any stage's outputs)."),
    "prepare": ("read a dataset's splits and write Parquet",
                "Read the train and test splits of --dataset (from data.mirror, else the Hugging Face Hub entry data.hub.<dataset>), "
                "cap and balance them as params.yaml says, and write train.parquet, test.parquet and meta.json."),
    "embed": ("embed the prepared texts",
              "Embed the prepared texts of --dataset with embed.model and write train.npy, test.npy, their labels and meta.json."),
    "sweep": ("run every (method, size) cell with cv.n_folds-fold CV",
              "Run every (method, minority size, draw) cell of augment.methods x imbalance.sizes x imbalance.draws with "
              "cv.n_folds-fold cross-validation, tracked in MLflow; write cells.csv, folds.csv, metrics.json and "
              "balanced_accuracy.png. An interrupted sweep resumes where it stopped."),
    "tune": ("Optuna studies on validation folds, then the best evaluated on the test set",
             "Search tune.space with Optuna for each size of tune.sizes (validation folds only), evaluate the best "
             "configuration on the test set, and write best.json, tune/ and tune_plots/."),
    "export": ("retrain the chosen configuration, export ONNX, log and register the model",
               "Retrain the configuration of best.json (or export.method), export encoder and classifier to ONNX, check "
               "them against PyTorch, write the model folder, and log and register it in MLflow (alias champion)."),
    "report": ("results tables, paired tests and figures of every dataset -> reports/",
               "Read the results of every dataset and write the tables, paired tests and figures to reports/ (README.md, "
               "tables/, figures/), logged to an MLflow run named report."),
    "predict": ("label texts with an exported folder or a registered model",
                "Label raw texts with an exported model folder or an MLflow model; write, as CSV, the input's columns (of a "
                "file of lines: text) followed by label, class_name and one p_<class> column per class (an input column "
                "named like one of these is kept as input_<name>)."),
    "pipeline": ("the DVC pipeline (dvc repro; with overrides dvc exp run -S) under one MLflow run",
                 "Run `dvc repro` on the dvc.yaml beside the params file (every stage that is not up to date) under one MLflow "
                 "run, which the stages' runs nest under (what `mlflow run .` calls). Overrides (--set, --datasets, --methods, "
                 "--sizes, or a params file other than the project's params.yaml) run `dvc exp run -S ...` instead: DVC writes "
                 "them into params.yaml and records a DVC experiment. DVC's lock and MLflow's store agree afterwards."),
    "serve": ("serve a registered model over HTTP (MLflow's scoring protocol), with input checks, limits and N workers",
              "Serve an MLflow model logged by `embalance export` with MLflow's scoring app behind a request guard: texts must "
              "be non-empty strings in every input format (400 otherwise), bodies over --max-body-bytes get 413, a body that "
              "does not arrive within --body-timeout gets 400, other content types 415; uvicorn runs --workers processes."),
    "cell": ("run and track one (dataset, method, size) cell",
             "Run one (dataset, method, size) cell of one draw, tracked in MLflow, and print its row; its files go to "
             "results/<dataset>/cells/<method>-n<size>/, outside the DVC outputs."),
}


def _sub(sub: Any, name: str, func: Callable[..., Any], *, dataset: bool = True) -> argparse.ArgumentParser:
    summary, description = COMMANDS[name]
    p = sub.add_parser(name, help=summary, description=description)
    p.set_defaults(func=func)
    if dataset:
        p.add_argument("--dataset", required=True, metavar="NAME", help="dataset name: a folder of data.mirror or a key of data.hub (e.g. sst2)")
    _common(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="embalance", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"embalance {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _sub(sub, "validate", _validate, dataset=False)
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write a fixed line here when the params pass (DVC's output)")
    p = _sub(sub, "prepare", _prepare)
    _dirs(p, "out", out="data/prepared/<dataset>")
    p = _sub(sub, "embed", _embed)
    _dirs(p, "prepared", "out", out="data/embeddings/<dataset>")
    p.add_argument("--if-changed", action="store_true", help="skip when the embeddings already match data, model and max_length")
    p = _sub(sub, "sweep", _sweep)
    _dirs(p, "prepared", "embeddings", "out", out="results/<dataset>")
    p = _sub(sub, "tune", _tune)
    _dirs(p, "prepared", "embeddings", "out", out="results/<dataset>")
    p.add_argument("--sizes", default="", metavar="N,N,...", help="comma-separated minority sizes (default: tune.sizes)")
    p.add_argument("--n-trials", type=int, default=None, metavar="N", help="trials per study (default: tune.n_trials)")
    p.add_argument("--n-jobs", type=int, default=1, metavar="N", help="worker processes sharing the study (default 1)")
    p.add_argument("--storage", default="", metavar="URL", help="Optuna storage URL (default: tune.storage)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="Optuna sampler (default: tune.sampler)")
    p.add_argument("--worker-only", action="store_true", help="only run trials; leave the final evaluation to the main invocation")
    p = _sub(sub, "export", _export)
    _dirs(p, "prepared", "embeddings", "results", "out", out="models/<dataset>")
    p.add_argument("--no-register", action="store_true", help="write models/<dataset>/ only; log and register nothing")
    p = _sub(sub, "report", _report, dataset=False)
    p.add_argument("--datasets", default="", metavar="NAME,NAME,...", help="comma-separated datasets (default: data.datasets)")
    p.add_argument("--results", type=Path, default=None, metavar="DIR", help="folder of results/<dataset>/ (default: results)")
    p.add_argument("--embeddings", type=Path, default=None, metavar="DIR", help="folder of <dataset>/ embeddings (default: data/embeddings)")
    p.add_argument("--models", type=Path, default=None, metavar="DIR", help="folder of <dataset>/export.json, the deployed models (default: models)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: reports)")
    p = _sub(sub, "predict", _predict, dataset=False)
    p.add_argument("--model", required=True, metavar="FOLDER|URI", help="models/<dataset>, an MLflow model folder, or a URI like models:/embalance-sst2@champion")
    p.add_argument("--input", default="-", metavar="FILE", help="CSV with a `text` column (texts with commas quoted), or a file of one text per line; - = stdin (default)")
    p.add_argument("--output", default="-", metavar="FILE", help="CSV to write: the input's columns, then the predictions; - = stdout (default)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", "csv", "lines"), help="input format (auto: csv for *.csv[.gz], else lines)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="texts per prediction call (default 256)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="ONNX Runtime intra-op threads (default 0: one per available CPU)")
    p.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow store for models:/ URIs (default: MLFLOW_TRACKING_URI, else tracking.uri of the params)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p = _sub(sub, "serve", _serve, dataset=False)
    p.add_argument("--model", required=True, metavar="URI|FOLDER", help="a URI like models:/embalance-sst2@champion, or an MLflow model folder (with MLmodel)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=5001, metavar="PORT", help="port to listen on (default 5001)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="uvicorn worker processes (default 0: one per two available CPUs; one worker keeps about 1.75 cores busy)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, metavar="BYTES", help=f"largest request body accepted; larger ones get 413 (default {DEFAULT_MAX_BODY_BYTES}, 4 MiB)")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, metavar="SECONDS", help=f"seconds for a request's whole body to arrive; a truncated body gets 400 after it (default {DEFAULT_BODY_TIMEOUT:g})")
    p.add_argument("--tracking-uri", default=None, metavar="URI", help="MLflow store for models:/ URIs (default: MLFLOW_TRACKING_URI, else tracking.uri of the params)")
    p = _sub(sub, "pipeline", _pipeline, dataset=False)
    p.add_argument("--dry-run", action="store_true", help="print the DVC command that would run, and run nothing")
    p.add_argument("--datasets", default="", metavar="NAME,NAME,...", help="comma-separated datasets (default: data.datasets)")
    p.add_argument("--methods", default="", metavar="M,M,...", help="comma-separated methods (default: augment.methods)")
    p.add_argument("--sizes", default="", metavar="N,N,...", help="comma-separated minority sizes (default: imbalance.sizes)")
    p = _sub(sub, "cell", _cell)
    _dirs(p, "prepared", "embeddings", "out", out="results/<dataset>/cells; the cell writes to DIR/<method>-n<size>[-draw<r>]/")
    p.add_argument("--method", required=True, metavar="METHOD", help="a method, e.g. smote or smote+mixup+refit")
    p.add_argument("--size", type=int, required=True, metavar="N", help="the minority size (a power of two)")
    p.add_argument("--draw", type=int, default=0, metavar="R", help="which independent draw of the pool (default 0: the single-draw protocol's)")
    return ap


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _one_line(error: BaseException) -> str:
    """An error's message in one line, whatever it holds."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _check_datasets(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Every dataset the command names is one: cheap, before the stage's imports and work."""
    data = params["data"]
    if args.command == "report":
        root = args.results or default_dir("results")
        for name in _split(args.datasets) or data["datasets"]:
            check_dataset(name, data, root / name, "results")
    elif args.command == "pipeline":
        for name in data["datasets"]:
            check_dataset(name, data)
    elif args.command not in ("predict", "serve", "validate"):  # validate checks them itself
        kind = READS.get(args.command)
        inputs = (getattr(args, kind) or default_dir(kind, args.dataset)) if kind else None
        check_dataset(args.dataset, data, inputs, kind or "")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    # SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C: runs are closed, finished work is kept.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) if in_main else None
    try:
        from embalance.params import load_params

        params = load_params(args.params, _overrides(args))
        _check_datasets(args, params)
        with removed_if_left_empty():  # a stage that fails leaves no empty output folder
            return args.func(args, params) or 0
    except EmbalanceError as e:
        print(f"embalance {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embalance {args.command}: interrupted; finished work is kept — run the same command again to go on.", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
