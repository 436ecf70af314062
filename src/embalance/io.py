"""Small file helpers shared by the stages: checked output folders, stable JSON, file hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and check that files can be written into it, before any work is done."""
    path = Path(path)
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
