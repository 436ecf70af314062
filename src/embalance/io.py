"""Small file helpers shared by the stages: checked output folders, stable JSON, file hashes, known datasets."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from embalance.errors import ConfigError

# The project's folders: what dvc.yaml passes to each stage, and each stage's default when run by hand.
LAYOUT: dict[str, str] = {
    "prepared": "data/prepared/{dataset}",
    "embeddings": "data/embeddings/{dataset}",
    "results": "results/{dataset}",
    "models": "models/{dataset}",
    "reports": "reports",
}


def default_dir(kind: str, dataset: str = "") -> Path:
    """The conventional folder of ``kind`` (a key of LAYOUT) for ``dataset``, relative to the project folder."""
    return Path(LAYOUT[kind].format(dataset=dataset))


# The folders ensure_writable_dir created inside `removed_if_left_empty` (None: outside it, nothing is recorded).
_created: list[Path] | None = None


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and check that files can be written into it, before any work is done."""
    path = Path(path)
    if _created is not None:
        _created.extend(p for p in (path, *path.parents) if not p.exists())
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"Output folder {str(path)!r} is not writable ({e.strerror or e}); choose another folder or fix its permissions.") from e
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def file_md5(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """MD5 of a file's bytes: the same hash DVC records for a file in dvc.lock."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def removed_if_left_empty() -> Iterator[None]:
    """Run a stage so that a failure leaves no empty output folder behind.

    Each stage creates its output folder up front (:func:`ensure_writable_dir`: an unwritable folder fails before
    the work). If the block then fails (an error, Ctrl-C), every folder ensure_writable_dir created inside it that
    still holds no file is removed again; folders that existed before, and any folder with a file, are kept.
    """
    global _created
    outer, _created = _created, []
    created = _created
    try:
        yield
    except BaseException:
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):  # the deepest first
            if path.is_dir() and not any(f.is_file() or f.is_symlink() for f in path.rglob("*")):
                shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        if outer is not None:  # an enclosing block removes them too if it fails later
            outer.extend(created)
        _created = outer


# ------------------------------------------------------------------------------------------------- datasets
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def known_datasets(mirror: str | os.PathLike[str], hub: Mapping[str, Any] | None) -> list[str]:
    """The datasets the prepare stage can read: the mirror's folders that hold a train.csv.gz, and data.hub's keys."""
    root = Path(mirror)
    in_mirror = [p.name for p in root.iterdir() if (p / "train.csv.gz").is_file()] if root.is_dir() else []
    return sorted({*in_mirror, *(hub or {})})


def check_dataset(name: str, data: Mapping[str, Any], inputs: Path | None = None, what: str = "") -> None:
    """Raise ConfigError unless ``name`` is a dataset: one the prepare stage can read, or one whose ``inputs`` exist.

    ``data`` is the ``data`` section of the params; ``inputs`` is the folder a stage reads (its ``what``, e.g.
    "embeddings"), so a stage still runs on a dataset whose source has gone once its inputs are built.
    """
    if not DATASET_NAME.fullmatch(name):
        raise ConfigError(f"A dataset name must be a plain folder name (letters, digits, '.', '_', '-'; not starting with '.', '_' or '-'), but got {name!r}.")
    if inputs is not None and inputs.is_dir():
        return
    known = known_datasets(data["mirror"], data.get("hub"))
    if name in known:
        return
    missing = f", and there are no {what or 'inputs'} in {str(inputs)!r}" if inputs is not None else ""
    raise ConfigError(
        f"Dataset {name!r} was not found: data.mirror ({str(data['mirror'])!r}) has no folder {name}/ with train.csv.gz and "
        f"params.yaml has no data.hub.{name} entry{missing}. Known datasets: {', '.join(known) or '(none)'}."
    )
