"""DVC stage `validate`: the params file is checked before any other stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a typo in params.yaml that only the sweep
noticed used to cost the sweep's outputs (and a full re-run after the fix). This stage is upstream of every other
one (``prepare`` depends on its output) and tracks the whole params file: a bad value stops ``dvc repro`` here, with
every other stage's outputs in place. Its output is one fixed line, so a params file that passes changes nothing
downstream: a stage re-runs only when a parameter it names changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embalance.io import check_dataset

VALIDATED = "params.yaml passed embalance's schema, and every dataset of data.datasets can be read.\n"


def run(params: Mapping[str, Any], out: Path | None = None) -> None:
    """Check that every dataset of ``data.datasets`` can be read (the schema was checked when ``params`` was
    loaded), then write :data:`VALIDATED` to ``out`` if given. Raises ConfigError naming the first bad value."""
    for name in params["data"]["datasets"]:
        check_dataset(name, params["data"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(VALIDATED)
