"""The `embalance` command: one sub-command per pipeline stage, plus `pipeline` and `cell`.

    embalance prepare  --dataset sst2          # DVC stage `prepare`
    embalance embed    --dataset sst2          # DVC stage `embed`
    embalance sweep    --dataset sst2          # DVC stage `sweep`
    embalance tune     --dataset sst2          # DVC stage `tune`: Optuna studies, best.json
    embalance export   --dataset sst2          # DVC stage `export`: ONNX encoder + classifier, registered in MLflow
    embalance report                           # DVC stage `report`: tables, paired tests, figures -> reports/
    embalance predict  --model models/sst2 --input texts.csv   # label texts with an exported or registered model
    embalance pipeline                         # prepare -> embed -> sweep for every dataset, one MLflow parent run
    embalance cell --dataset sst2 --method smote --size 64   # one cell, tracked, no result files

Every sub-command takes ``--params params.yaml`` and any number of ``--set section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from embalance.errors import ConfigError, EmbalanceError

STAGES = ("prepare", "embed", "sweep", "tune", "export", "report", "predict", "pipeline", "cell")


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a parameter, e.g. --set cv.n_folds=5")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="embalance", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in (("prepare", "read a dataset's splits and write Parquet"), ("embed", "embed the prepared texts"), ("sweep", "run every (method, size) cell with 10-fold CV")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dataset", required=True)
        _common(p)
        if name == "embed":
            p.add_argument("--if-changed", action="store_true", help="skip when the embeddings already match data, model and max_length")
    p = sub.add_parser("tune", help="Optuna studies on validation folds, then the best evaluated on the test set")
    p.add_argument("--dataset", required=True)
    p.add_argument("--sizes", default="", help="comma-separated minority sizes (default: tune.sizes)")
    p.add_argument("--n-trials", type=int, default=None, help="trials per study (default: tune.n_trials)")
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes sharing the study (default 1)")
    p.add_argument("--storage", default="", help="Optuna storage URL (default: tune.storage)")
    p.add_argument("--sampler", default="", help="tpe | random | grid (default: tune.sampler)")
    p.add_argument("--worker-only", action="store_true", help="only run trials; leave the final evaluation to the main invocation")
    _common(p)
    p = sub.add_parser("export", help="retrain the chosen configuration, export ONNX, log and register the model")
    p.add_argument("--dataset", required=True)
    p.add_argument("--no-register", action="store_true", help="write models/<dataset>/ only; log and register nothing")
    _common(p)
    p = sub.add_parser("report", help="results tables, paired tests and figures of every dataset -> reports/")
    p.add_argument("--datasets", default="", help="comma-separated datasets (default: data.datasets)")
    _common(p)
    p = sub.add_parser("predict", help="label texts with an exported folder or a registered model")
    p.add_argument("--model", required=True, help="models/<dataset>, an MLflow model folder, or a URI like models:/embalance-sst2@champion")
    p.add_argument("--input", default="-", help="CSV with a `text` column, or a file of one text per line; - = stdin (default)")
    p.add_argument("--output", default="-", help="CSV to write; - = stdout (default)")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", "csv", "lines"), help="input format (auto: csv for *.csv[.gz], else lines)")
    p.add_argument("--batch-size", type=int, default=256, help="texts per prediction call (default 256)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default 0: one per available CPU)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow store for models:/ URIs (default: MLFLOW_TRACKING_URI, else tracking.uri of the params)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _common(p)
    p = sub.add_parser("pipeline", help="prepare -> embed -> sweep for each dataset under one MLflow run")
    p.add_argument("--datasets", default="", help="comma-separated datasets (default: data.datasets)")
    p.add_argument("--methods", default="", help="comma-separated methods (default: augment.methods)")
    p.add_argument("--sizes", default="", help="comma-separated minority sizes (default: imbalance.sizes)")
    _common(p)
    p = sub.add_parser("cell", help="run and track one (dataset, method, size) cell")
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--size", type=int, required=True)
    _common(p)
    return ap


def _list_override(key: str, raw: str) -> list[str]:
    return [f"{key}=[{raw}]"] if raw.strip() else []


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    # SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C: runs are closed, finished work is kept.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) if in_main else None
    try:
        return _dispatch(args)
    except EmbalanceError as e:
        print(f"embalance {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embalance {args.command}: interrupted; finished work is kept — run the same command again to go on.", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    from embalance.params import load_params

    overrides = list(args.overrides)
    if args.command == "pipeline":
        overrides += _list_override("data.datasets", args.datasets)
        overrides += _list_override("augment.methods", args.methods)
        overrides += _list_override("imbalance.sizes", args.sizes)
    elif args.command == "cell":
        overrides += [f"augment.methods=[{args.method}]", f"imbalance.sizes=[{args.size}]"]
    elif args.command == "tune":
        overrides += _list_override("tune.sizes", args.sizes)
        overrides += [f"tune.n_trials={args.n_trials}"] if args.n_trials is not None else []
        overrides += [f"tune.storage={args.storage}"] if args.storage else []
        overrides += [f"tune.sampler={args.sampler}"] if args.sampler else []
    params = load_params(args.params, overrides)

    if args.command == "prepare":
        from embalance.data import prepare

        prepare.run(params, args.dataset)
    elif args.command == "embed":
        from embalance.data import embed

        embed.run(params, args.dataset, force=not args.if_changed)
    elif args.command == "sweep":
        from embalance.stages import sweep

        sweep.run(params, args.dataset)
    elif args.command == "tune":
        from embalance.stages import tune

        if args.n_jobs < 1:
            raise ConfigError(f"--n-jobs must be >= 1, but got {args.n_jobs}.")
        tune.run(params, args.dataset, n_jobs=args.n_jobs, worker_only=args.worker_only)
    elif args.command == "export":
        from embalance.stages import export

        export.run(params, args.dataset, register=not args.no_register)
    elif args.command == "report":
        from embalance.stages import report

        report.run(params, [d.strip() for d in args.datasets.split(",") if d.strip()] or params["data"]["datasets"])
    elif args.command == "predict":
        return _predict(args, params)
    elif args.command == "cell":
        from embalance.stages import sweep

        cells = sweep.run(params, args.dataset, out_dir=Path("results") / args.dataset / "cells" / f"{args.method}-n{args.size}")
        print(cells.drop(columns=["mlflow_run_id"]).T.to_string(header=False))
    elif args.command == "pipeline":
        from embalance.stages import pipeline

        pipeline.run(params)
    return 0


def _predict(args: argparse.Namespace, params: dict) -> int:
    """`embalance predict`: the one command line of the serving runtime (embalance.serving.predict.run)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from embalance import tracking
    from embalance.serving import predict

    mlflow.set_tracking_uri(args.tracking_uri or tracking.tracking_uri(params))
    try:
        predict.run(args.model, args.input, args.output, fmt=args.fmt, batch_size=args.batch_size, threads=args.threads, progress=not args.no_progress)
    except (MlflowException, FileNotFoundError, ValueError, TypeError) as e:  # TypeError: an MLflow model not logged by `embalance export`
        print(f"embalance predict: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
