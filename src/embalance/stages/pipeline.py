"""The whole pipeline in one process, under one MLflow parent run: what `mlflow run .` calls.

It runs the same stage functions that `dvc repro` runs, in the same order, writing the same files; the embedding
stage is skipped when its output already matches the data, model and max_length (the expensive step is cached
on both paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow

from embalance import tracking
from embalance.data import embed, prepare
from embalance.experiment.protocol import check_sizes
from embalance.stages import sweep


def run(params: Mapping[str, Any]) -> None:
    datasets = params["data"]["datasets"]
    tracking.setup(params)
    with tracking.parent_run("pipeline", tags={**tracking.git_info(), "embalance.run_type": "pipeline"}):
        # `mlflow run` has already logged its -P values (empty = from params.yaml) under the plain names;
        # the values in effect go under their own keys, and the whole configuration as an artifact.
        mlflow.log_params(
            {
                "effective.datasets": ",".join(datasets),
                "effective.methods": ",".join(params["augment"]["methods"]),
                "effective.sizes": ",".join(map(str, params["imbalance"]["sizes"])),
            }
        )
        mlflow.log_dict(dict(params), "params.yaml")
        # Cheap checks for every dataset first, so a bad size for the last dataset fails before the first embeds.
        prepared = {d: prepare.run(params, d) for d in datasets}
        for prep in prepared.values():
            check_sizes(prep.train["label"].to_numpy(), params["imbalance"]["minority_classes"], params["imbalance"]["sizes"])
        for d in datasets:
            embed.run(params, d, force=False)
            sweep.run(params, d)
