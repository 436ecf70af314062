"""Stage `sweep`: every (method, minority size, draw) cell of a dataset, 10-fold CV each, tracked in MLflow.

Fold k of a cell: the imbalanced pool minus fold k is oversampled (training part only), an MLP is trained with
early stopping on fold k, and the model is scored on the balanced test set. A fold whose oversampler cannot
run is recorded with its status and reason, and the sweep goes on.

A method is ``<base>[+mixup][+refit]`` (:func:`embalance.params.parse_method`): the base resamples the training
part (an oversampler, ``undersample``) or changes the loss (``weighted``, ``logit_adjusted``); ``+mixup`` mixes
each batch with real training rows; ``+refit`` re-fits the output layer on a class-balanced subsample of the
fold's real training rows. ``smote+mixup`` trains on exactly the synthetic rows ``smote`` trains on, and every
method of a (size, draw, fold) shares the MLP's initialisation and batch order, so variants compare pairwise.

With ``train.both_readings`` each fold is scored twice: ``es_*`` (early stopping's weights) and ``fixed_*``
(after ``train.fixed_epochs``); ``test_*`` is the reading ``train.early_stopping`` picks.

With ``imbalance.draws: R`` every (method, size) runs R times, on R independent draws of the pool, each with its
own folds and seeds (:mod:`embalance.experiment.recipe`); draw 0 is the single-draw protocol. Draws are the outer
loop, so an interrupted sweep has finished the single-draw study first.

Outputs (DVC): ``results/<dataset>/cells.csv`` (one row per cell, with its ``draw``), ``folds.csv`` (one row per
fold, with its ``draw``), ``metrics.json`` (for ``dvc metrics show``; per (method, size), with R > 1 the mean over
draws of the draw means) and ``balanced_accuracy.png`` (for ``dvc plots show``; with R > 1, the mean over draws).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from embalance import tracking
from embalance.cluster import code_digest, connect, describe, run_cells_on, scheduler_address
from embalance.data.embeddings import load_embeddings
from embalance.errors import ConfigError
from embalance.experiment.cells import Cell, FoldOutcome, over_draws, run_cells, summarise
from embalance.experiment.methods import run_params
from embalance.experiment.metrics import TEST_METRICS
from embalance.experiment.protocol import Embeddings, check_sizes
from embalance.experiment.recipe import draw_key, n_draws
from embalance.io import default_dir, ensure_writable_dir, write_json
from embalance.runtime import seed_everything

if TYPE_CHECKING:
    from distributed import Client


def sweep_params(params: Mapping[str, Any], dataset: str, draws: Sequence[int]) -> dict[str, Any]:
    """The sweep run's MLflow params: every params.yaml value its cells depend on, under its params.yaml key."""
    out: dict[str, Any] = {"dataset": dataset, "draws_run": list(draws)}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                flatten(f"{prefix}.{k}", v)
        else:
            out[prefix] = value

    for section in (*RESULT_KEYS, "train"):
        flatten(section, params[section])
    return out


def sweep_name(params: Mapping[str, Any], dataset: str, key: str, draws: Sequence[int]) -> str:
    """``sweep sst2 10-fold 12 methods x 8 sizes [3f2a9c]``: what tells two sweeps apart at a glance, and the first
    characters of the resume key (a hash of every value the results depend on) for those that differ elsewhere.
    A sweep of one cell (`embalance cell`) is named after it: ``cell sst2 smote n=64 10-fold [3f2a9c]``. A repeat
    gets ``#2``, ``#3``, … (:func:`embalance.tracking.unique_name`)."""
    methods, sizes = params["augment"]["methods"], params["imbalance"]["sizes"]
    draws_text = f" {len(draws)} draws" if list(draws) != [0] else ""
    if len(methods) == 1 and len(sizes) == 1 and len(draws) == 1:
        draw_text = f" draw={draws[0]}" if list(draws) != [0] else ""
        return f"cell {dataset} {methods[0]} n={sizes[0]}{draw_text} {params['cv']['n_folds']}-fold [{key[:6]}]"
    return (
        f"sweep {dataset} {params['cv']['n_folds']}-fold {len(methods)} method{'s' * (len(methods) != 1)} x "
        f"{len(sizes)} size{'s' * (len(sizes) != 1)}{draws_text} [{key[:6]}]"
    )


def summary_metrics(cells: pd.DataFrame, metric: str = "test_balanced_accuracy") -> tuple[dict[str, float], list[tuple[str, float, int]]]:
    """The sweep run's metrics: counts of cells and folds, each method's mean over sizes; and each method's value per
    size as (key, value, step=size) points, which MLflow's UI draws as the curve over minority sizes."""
    table = pd.DataFrame(by_method_size(cells))
    scalars: dict[str, float] = {
        "cells": float(len(cells)),
        "cells_ran": float((cells["n_folds_ok"] > 0).sum()),
        "folds_ok": float(cells["n_folds_ok"].sum()),
    }
    points: list[tuple[str, float, int]] = []
    column = f"{metric}_mean"
    if column not in table:
        return scalars, points
    for method, df in table.groupby("method", sort=False):
        name = str(method).replace("+", "_")  # MLflow keys take letters, digits, _ - . / and spaces, not +
        ran = df[df[column].notna()]
        if len(ran):
            scalars[f"{metric}_mean_over_sizes.{name}"] = float(ran[column].mean())
        points += [(f"{metric}_by_size.{name}", float(v), int(n)) for n, v in zip(ran["minority_size"], ran[column], strict=True)]
    return scalars, points


def sweep_draws(params: Mapping[str, Any], draws: Sequence[int] | None = None) -> list[int]:
    """The draws a sweep runs: ``draws`` when given (e.g. one draw for ``embalance cell --draw``), else 0..R-1."""
    if draws is None:
        return list(range(n_draws(params)))
    for r in draws:
        draw_key(r)  # a ConfigError for a draw that is not an integer >= 0
    if not draws or len(set(draws)) != len(draws):
        raise ConfigError(f"A sweep runs a non-empty list of distinct draws, but got draws={list(draws)!r}.")
    return [int(r) for r in draws]


def cell_name(method: str, size: int, draw: int, draws: Sequence[int]) -> str:
    """A cell run's name: ``smote n=64``, with `` draw=r`` when the sweep runs more than draw 0 (R > 1)."""
    return f"{method} n={size}" if list(draws) == [0] else f"{method} n={size} draw={draw}"


def run_sweep(
    emb: Embeddings,
    params: Mapping[str, Any],
    dataset: str,
    *,
    writer: tracking.RunWriter | None = None,
    parent_id: str | None = None,
    progress: bool = True,
    done: Mapping[Cell, Mapping[str, Any]] | None = None,
    on_cell: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
    draws: Sequence[int] | None = None,
    cluster: Client | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every (method, size, draw) cell; log each cell and fold run when a writer is given. Returns (cells, folds).

    ``done`` holds cells finished by an interrupted run, keyed by (method, size, draw) (their rows are taken as
    they are); ``on_cell`` is told of each newly finished cell. ``draws``: the draws to run (default: all
    ``imbalance.draws``). ``cluster``: a Dask client whose workers compute the cells (:mod:`embalance.cluster`);
    they finish in any order, and the tables come out in the grid's order all the same.
    """
    done = done or {}
    methods, sizes, draws = params["augment"]["methods"], params["imbalance"]["sizes"], sweep_draws(params, draws)
    check_sizes(emb.y_train, params["imbalance"]["minority_classes"], sizes)  # before any work
    cells: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    # Draws outermost: draw 0 (the single-draw study) finishes first, and at R = 1 the order is the one it always was.
    grid: list[Cell] = [(m, n, r) for r in draws for n in sizes for m in methods]
    for key in grid:
        if key in done:
            cells.append(dict(done[key]["cell"]))
            folds.extend(dict(f) for f in done[key]["folds"])
    todo = [key for key in grid if key not in done]
    with tqdm(total=len(grid), initial=len(grid) - len(todo), desc=f"sweep {dataset}", unit="cell", disable=not progress) as bar:
        results = run_cells(emb, todo, params=params, dataset=dataset) if cluster is None else run_cells_on(cluster, emb, todo, params=params, dataset=dataset)
        for method, size, draw, outcomes in results:
            summary = summarise(outcomes)
            name = cell_name(method, size, draw, draws)
            with tracking.deferred_interrupts():  # a cell's runs and its checkpoint line are written whole, or not at all
                run_id = writer.create(name, parent_id, {"embalance.run_type": "cell", "embalance.draw": str(draw)}) if writer else None
                if writer and run_id:
                    try:
                        _log_cell(writer, run_id, params, dataset, (method, size, draw), name, outcomes, summary)
                    except BaseException as e:
                        writer.fail(run_id, e)
                        raise
                cell = {"dataset": dataset, "method": method, "minority_size": size, "draw": draw, **summary, "mlflow_run_id": run_id or ""}
                cell_folds_rows = [
                    {
                        "dataset": dataset, "method": method, "minority_size": size, "draw": draw, "fold": o.fold, "status": o.status,
                        "sampler_status": o.info.status if o.info else o.status, "reason": o.reason, **o.metrics,
                    }
                    for o in outcomes
                ]
                cells.append(cell)
                folds.extend(cell_folds_rows)
                if on_cell is not None:
                    on_cell(cell, cell_folds_rows)
            bar.set_postfix_str(name)
            bar.update(1)
    order = {key: i for i, key in enumerate(grid)}
    cells.sort(key=lambda c: order[_cell_key(c)])
    folds.sort(key=lambda f: (order[_cell_key(f)], f["fold"]))
    return pd.DataFrame(cells), pd.DataFrame(folds)


def _cell_key(row: Mapping[str, Any]) -> Cell:
    return (row["method"], int(row["minority_size"]), int(row["draw"]))


def _log_cell(
    writer: tracking.RunWriter,
    run_id: str,
    params: Mapping[str, Any],
    dataset: str,
    cell: Cell,
    name: str,
    outcomes: Sequence[FoldOutcome],
    summary: Mapping[str, Any],
) -> None:
    cp = run_params(params, dataset, *cell)
    for o in outcomes:
        fold_id = writer.create(f"{name} fold {o.fold}", run_id, {"embalance.run_type": "fold", "embalance.draw": str(cell[2])})
        writer.log(
            fold_id,
            params={**cp, "fold": o.fold},
            # fold_seconds: the fold's own time (resampling, and training: its share of a batched group's time) on the
            # machine that ran it; the run's start and end only say when the driver logged it. Not in folds.csv,
            # which stays reproducible.
            metrics={**o.metrics, "fold_seconds": o.seconds},
            curves=o.curves,
            tags={
                "embalance.status": o.status,
                "embalance.reason": o.reason or ("" if o.status == "ok" else o.status),
                "embalance.sampler_status": o.info.status if o.info else o.status,
                "embalance.seconds": f"{o.seconds:.3f}",
            },
        )
        writer.finish(fold_id)
    numeric = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    writer.log(run_id, params=cp, metrics=numeric, tags={"embalance.status": summary["status"], "embalance.reason": summary["reason"] or ("" if summary["status"] == "ok" else summary["status"])})
    writer.finish(run_id)


def by_method_size(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """One summary per (method, size), in the table's order: its cell row when it has one draw, else the summary
    over its draws (:func:`embalance.experiment.cells.over_draws`: each metric the mean over draws of the draw means)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in cells.to_dict("records"):
        groups.setdefault((row["method"], int(row["minority_size"])), []).append(row)
    return [{"method": m, "minority_size": n, **over_draws(rows)} for (m, n), rows in groups.items()]


def metrics_json(cells: pd.DataFrame) -> dict[str, Any]:
    """Nested {method: {n<size>: {...}}} summary for `dvc metrics show`; with several draws, the mean over draws of
    the draw means, ``n_folds_ok`` summed over draws, and ``n_draws``."""
    out: dict[str, Any] = {}
    for row in by_method_size(cells):
        entry: dict[str, Any] = {"status": row["status"], "n_folds_ok": int(row["n_folds_ok"])}
        if "n_draws" in row:  # several draws (one draw: the entry it has always been, byte for byte)
            entry["n_draws"] = int(row["n_draws"])
        for key in TEST_METRICS:
            if f"{key}_mean" in row and not pd.isna(row[f"{key}_mean"]):
                entry[key] = round(float(row[f"{key}_mean"]), 6)
        out.setdefault(row["method"], {})[f"n{row['minority_size']}"] = entry
    return out


def plot_curve(cells: pd.DataFrame, path: Path, dataset: str, metric: str = "test_balanced_accuracy") -> None:
    """Balanced test accuracy against minority size (log2 axis), one line per method, a band of ±1 std over folds;
    with several draws, the mean over draws of the draw means and a band of ±1 std over draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embalance.stages.report.figures import fit_lines, method_style

    table = pd.DataFrame(by_method_size(cells))
    n = int(table["n_draws"].max()) if "n_draws" in table else 1
    spread, over = (f"{metric}_std", "folds") if n == 1 else (f"{metric}_draw_std", "draws")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for method, df in table.groupby("method", sort=False):
        df = df.sort_values("minority_size")
        ran = df[df["n_folds_ok"] > 0]
        if len(ran):
            m, s = ran[f"{metric}_mean"].to_numpy(), ran[spread].to_numpy()
            style = method_style(str(method))
            ax.plot(ran["minority_size"], m, label=str(method), ms=4, **style)
            ax.fill_between(ran["minority_size"], m - s, m + s, color=style["color"], alpha=0.10, lw=0)
        skipped = df[df["n_folds_ok"] == 0]
        if len(skipped):
            ax.plot([], [], " ", label=f"{method}: no run at n={', '.join(map(str, skipped['minority_size']))}")
    ax.set_xscale("log", base=2)
    sizes = sorted(table["minority_size"].unique().tolist())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("minority samples per minority class in the imbalanced pool (log2 scale)")
    ax.set_ylabel("balanced test accuracy (fraction)")
    what = "mean" if n == 1 else f"mean over {n} draws"
    title = f"{dataset}: balanced test accuracy vs minority size ({what} ± 1 std over {over})"
    ax.set_title(fit_lines(title, 0.8 * fig.get_figwidth(), 12), fontsize=12)  # 12: matplotlib's "large" title
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(cells: pd.DataFrame, folds: pd.DataFrame, out_dir: Path, dataset: str) -> None:
    ensure_writable_dir(out_dir)
    cells.to_csv(out_dir / "cells.csv", index=False)
    folds.to_csv(out_dir / "folds.csv", index=False)
    write_json(out_dir / "metrics.json", metrics_json(cells))
    plot_curve(cells, out_dir / "balanced_accuracy.png", dataset)


RESULT_KEYS = ("seed", "imbalance", "cv", "augment")
# Train keys that change how fast, not what: left out of the resume key.
SPEED_ONLY = ("device", "threads", "engine", "max_models_per_group", "max_group_bytes")


def resume_key(params: Mapping[str, Any], emb: Embeddings, draws: Sequence[int] | None = None) -> str:
    """A hash of everything a cell's result depends on: params, the embeddings' bytes and the code that computes it
    (and the draws run, when a sweep runs only some: ``embalance cell --draw``)."""
    import hashlib

    h = hashlib.sha256()
    relevant = {k: params[k] for k in RESULT_KEYS} | {"train": {k: v for k, v in params["train"].items() if k not in SPEED_ONLY}}
    if draws is not None:
        relevant["draws_run"] = list(draws)
    h.update(json.dumps(relevant, sort_keys=True, default=str).encode())
    h.update(json.dumps({k: v for k, v in emb.tags.items() if k.endswith("md5")}, sort_keys=True).encode())
    # The code that computes a cell: the sweep stage's closure (embalance.codedeps: the files dvc.yaml names as its deps).
    h.update(code_digest().encode())
    return h.hexdigest()[:16]


class Checkpoint:
    """Finished cells of an interrupted sweep, one JSON line each, so that a re-run does not redo them.

    Lives outside the DVC outputs (which DVC removes before re-running a stage), under ``.embalance/sweep/``,
    and is removed once the sweep has finished and written its results.
    """

    def __init__(self, dataset: str, key: str, root: Path = Path(".embalance") / "sweep") -> None:
        self.path = ensure_writable_dir(root / dataset) / f"{key}.jsonl"

    def load(self) -> dict[Cell, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        done = {}
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the interruption: that cell is simply redone
                continue
            done[_cell_key(rec["cell"])] = rec
        return done

    def add(self, cell: Mapping[str, Any], folds: Sequence[Mapping[str, Any]]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"cell": cell, "folds": list(folds)}, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def run(
    params: Mapping[str, Any],
    dataset: str,
    *,
    out_dir: Path | None = None,
    embeddings_dir: Path | None = None,
    prepared_dir: Path | None = None,
    progress: bool = True,
    draws: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Load embeddings, sweep all cells under one sweep run in MLflow (:func:`sweep_name`), write the results files.

    An interrupted sweep resumes: cells that finished are read back from the checkpoint (not recomputed), and
    the remaining cells are logged under the same MLflow sweep run. ``draws``: only these draws (default: every
    draw of ``imbalance.draws``). With a Dask scheduler configured (:func:`embalance.cluster.scheduler_address`)
    the cells are computed on its workers; this process writes and logs everything, as on one machine.
    """
    run_draws = sweep_draws(params, draws)  # a bad draw fails before any work
    out_dir = out_dir or default_dir("results", dataset)
    ensure_writable_dir(out_dir)  # fail before the work, not after
    emb = load_embeddings(dataset, embeddings_dir, prepared_dir)
    check_sizes(emb.y_train, params["imbalance"]["minority_classes"], params["imbalance"]["sizes"])
    seed_everything(params["seed"])
    address = scheduler_address(params)
    with contextlib.ExitStack() as stack:
        # The cluster is reached before any run is created: a wrong address fails here, with nothing to clean up.
        client = stack.enter_context(connect(address, (params.get("cluster") or {}).get("connect_timeout") or 30)) if address else None
        experiment_id = tracking.setup(params)
        key = resume_key(params, emb, None if draws is None else run_draws)
        checkpoint = Checkpoint(dataset, key)
        done = checkpoint.load()
        tags = {**tracking.git_info(), **emb.tags, "embalance.dataset": dataset}
        resume_run = _sweep_run_to_resume(experiment_id, key) if done else None
        if done:
            print(f"sweep {dataset}: resuming: {len(done)} finished cells kept from {checkpoint.path}")
        if client is not None:
            print(f"sweep {dataset}: cells run on the Dask cluster at {address} ({describe(client)})")
            tags["embalance.cluster"] = address
        import mlflow

        run_tags = {**tags, "embalance.run_type": "sweep", "embalance.sweep_key": key}
        with tracking.parent_run(sweep_name(params, dataset, key, run_draws), tags=run_tags, run_id=resume_run) as parent:
            if resume_run is not None:
                _drop_unfinished_cells(parent.info.run_id, {rec["cell"]["mlflow_run_id"] for rec in done.values()})
            else:
                mlflow.log_params({k: str(v) for k, v in sweep_params(params, dataset, run_draws).items()})
            writer = tracking.RunWriter(experiment_id, tags)
            cells, folds = run_sweep(
                emb, params, dataset, writer=writer, parent_id=parent.info.run_id, progress=progress, done=done, on_cell=checkpoint.add,
                draws=run_draws, cluster=client,
            )
            write_results(cells, folds, out_dir, dataset)
            scalars, points = summary_metrics(cells)
            writer.log(parent.info.run_id, metrics=scalars)
            writer.log_points(parent.info.run_id, points)
            mlflow.log_artifacts(str(out_dir), artifact_path="results")
    checkpoint.clear()
    ran = cells[cells["n_folds_ok"] > 0]
    print(f"sweep {dataset}: {len(cells)} cells ({len(ran)} ran, {len(cells) - len(ran)} could not run) -> {out_dir}")
    return cells


def _drop_unfinished_cells(sweep_run_id: str, kept: set[str]) -> None:
    """A cell whose logging was cut off by the interruption is redone: its partial runs are deleted (soft delete)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_run(sweep_run_id).info.experiment_id
    for cell in client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{sweep_run_id}'", max_results=5000):
        if cell.info.run_id in kept:
            continue
        for fold in client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'", max_results=1000):
            client.delete_run(fold.info.run_id)
        client.delete_run(cell.info.run_id)


def _sweep_run_to_resume(experiment_id: str, key: str) -> str | None:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`embalance.sweep_key` = '{key}' and tags.`embalance.run_type` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None
