"""The `report:` section of params.yaml, checked by the params schema (embalance.params.ReportParams)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embalance.params import section


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `report:` section, checked with the rest of ``params``; raises ConfigError naming the bad value."""
    checked = section(params, "report")
    return {**params["report"], "min_test_per_class": checked.min_test_per_class}  # the schema's default when unset
