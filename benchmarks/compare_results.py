"""How far this checkout's results are from a commit's: the cross-machine reproducibility figures of the README.

For each JSON file given (default: every ``metrics.json`` and ``best.json`` under ``results/`` of the project and of
``studies/paper``), compares every number with the same file at ``REV`` (``git show``) and prints how many numbers
there are, how many differ, and the largest absolute difference, with the place it occurs; for the reports
(``reports/README.md``) the number of lines that differ. Run it after ``dvc repro`` on another machine:

    python benchmarks/compare_results.py HEAD                 # this checkout's outputs against the committed ones
    python benchmarks/compare_results.py 475f360 results/sst2/metrics.json

Written by hand: a JSON tree walk of a few lines; no library compares numbers leaf by leaf with their paths.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON tree by its path (``sst2.smote.64.test_balanced_accuracy_mean``)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}" if path else str(key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{path}[{i}]").items()}
    return {path: value}


def at_rev(root: Path, rev: str, path: Path) -> str | None:
    done = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], cwd=root, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def compare_json(root: Path, rev: str, path: Path) -> str:
    old_text = at_rev(root, rev, path)
    if old_text is None:
        return f"{path}: not in {rev}"
    old, new = leaves(json.loads(old_text)), leaves(json.loads((root / path).read_text()))
    numbers = [k for k in new if isinstance(new[k], (int, float)) and not isinstance(new[k], bool) and isinstance(old.get(k), (int, float))]
    diffs = {k: abs(new[k] - old[k]) for k in numbers if not (new[k] == old[k] or (math.isnan(new[k]) and math.isnan(old[k])))}
    others = [k for k in set(old) | set(new) if k not in numbers and old.get(k) != new.get(k)]
    line = f"{path}: {len(numbers)} numbers, {len(diffs)} differ"
    if diffs:
        worst = max(diffs, key=diffs.get)
        line += f", at most {diffs[worst]:.2g} ({worst})"
    if others:
        line += f"; {len(others)} other values differ (e.g. {sorted(others)[0]})"
    return line


def compare_lines(root: Path, rev: str, path: Path) -> str:
    old_text = at_rev(root, rev, path)
    if old_text is None:
        return f"{path}: not in {rev}"
    old, new = old_text.splitlines(), (root / path).read_text().splitlines()
    changed = sum(a != b for a, b in zip(old, new, strict=False)) + abs(len(old) - len(new))
    return f"{path}: {len(new)} lines, {changed} differ"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the commit to compare with (e.g. HEAD: the committed outputs)")
    ap.add_argument("paths", nargs="*", type=Path, help="files relative to the project root (default: the results' metrics.json, best.json and reports/README.md)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose outputs are compared (default: this one)")
    args = ap.parse_intermixed_args(argv)
    root = args.root.resolve()
    paths = args.paths or sorted(
        p.relative_to(root)
        for pattern in ("results/*/metrics.json", "results/*/best.json", "reports/README.md", "studies/*/results/*/metrics.json", "studies/*/results/*/best.json", "studies/*/reports/README.md")
        for p in root.glob(pattern)
    )
    for path in paths:
        if not (root / path).is_file():
            print(f"{path}: no such file here", file=sys.stderr)
            return 2
        print(compare_json(root, args.rev, path) if path.suffix == ".json" else compare_lines(root, args.rev, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
