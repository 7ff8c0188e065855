"""The vectors, the query set and the exact ground truth, all regenerated from (seed, chunk) so the loader and the
ground-truth pass see the same data without keeping it.

Primary keys are the vectors' global positions 0..N-1, whatever the chunk and batch sizes: the reference restarts
its keys at 0 in every chunk, so when N exceeds a chunk its ground-truth copy held a tenth of the vectors and its
recall read 0.106. Runs inside the jobs; numpy only.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mlps_slurm.benchmarks.vectordb.indexes import DISTRIBUTIONS

QUERY_STREAM = 2**31 - 1  # the query set's generator stream, apart from every chunk's (chunk numbers are smaller)


def chunk_vectors(seed: int, chunk: int, rows: int, dimension: int, distribution: str) -> np.ndarray:
    """Chunk `chunk`'s `rows` vectors (float32), the same on every call."""
    rng = np.random.Generator(np.random.PCG64([seed, chunk]))
    if distribution == "uniform":
        return rng.random((rows, dimension), dtype=np.float32)
    if distribution == "normal":
        return rng.standard_normal((rows, dimension), dtype=np.float32)
    raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")


def chunks(num_vectors: int, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """(chunk number, first key, rows) covering keys 0..num_vectors-1 once."""
    for number, start in enumerate(range(0, num_vectors, chunk_size)):
        yield number, start, min(chunk_size, num_vectors - start)


def query_vectors(seed: int, count: int, dimension: int, distribution: str) -> np.ndarray:
    return chunk_vectors(seed, QUERY_STREAM, count, dimension, distribution)


def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    v = vectors.astype(np.float64)
    if metric == "COSINE":
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(norms == 0, 1, norms)
    return v


def ground_truth(seed: int, num_vectors: int, chunk_size: int, dimension: int, distribution: str, metric: str,
                 queries: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k keys of every query (int64 [queries, k]) by brute force over all N vectors, chunk by chunk,
    in float64: COSINE and IP rank by largest similarity, L2 by smallest distance."""
    q = _prepare(queries, metric)
    k = min(k, num_vectors)
    best_keys = np.empty((len(q), 0), dtype=np.int64)
    best_scores = np.empty((len(q), 0), dtype=np.float64)
    for number, start, rows in chunks(num_vectors, chunk_size):
        v = _prepare(chunk_vectors(seed, number, rows, dimension, distribution), metric)
        if metric == "L2":  # smaller is better: score = -squared distance
            scores = -(np.sum(q * q, axis=1)[:, None] - 2 * q @ v.T + np.sum(v * v, axis=1)[None, :])
        else:
            scores = q @ v.T
        keys = np.broadcast_to(np.arange(start, start + rows, dtype=np.int64), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_keys = np.concatenate([best_keys, keys], axis=1)
        top = np.argpartition(-all_scores, min(k, all_scores.shape[1]) - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, top, axis=1)
        best_keys = np.take_along_axis(all_keys, top, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_keys, order, axis=1)


def recall_at_k(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found top-k ∩ true top-k| / k."""
    if not len(truth):
        return 0.0
    hits = sum(len(set(f[:k]) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (len(truth) * min(k, truth.shape[1]))
