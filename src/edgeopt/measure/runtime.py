"""ONNX Runtime sessions, latency percentiles and accuracy, measured on the exported file.

:func:`make_session` lives in :mod:`edgeopt.measure._session` (the exact int8 sessions of
:mod:`edgeopt.measure.int8` are made with it, and :func:`measure_accuracy` runs those) and is
imported from here as it always was.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.measure._session import make_session

__all__ = [
    "Latency",
    "make_session",
    "measure_accuracy",
    "measure_feed_latency",
    "measure_latency",
    "predict",
    "time_runs",
    "top1",
]

WARMUP_RUNS = 10
MIN_RUNS = 50
MIN_SECONDS = 0.5
MAX_RUNS = 2000
MAX_SECONDS = 5.0


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of one run in milliseconds (measured): one inference of ``batch``
    samples (``p50_per_sample`` in the JSON divides by it)."""

    p50: float
    p90: float
    p99: float
    runs: int
    threads: int
    batch: int
    provider: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "runs": self.runs,
            "threads": self.threads,
            "batch": self.batch,
            "provider": self.provider,
            "method": "measured",
            "p50_per_sample": self.p50 / max(self.batch, 1),
        }


def time_runs(
    session: Any,
    feed: dict[str, np.ndarray],
    *,
    min_runs: int,
    min_seconds: float,
    max_runs: int = MAX_RUNS,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    """Seconds of each run of a timed loop (warm the session up first): at least ``min_runs``
    runs and ``min_seconds``, at most ``max_runs`` or ``max_seconds``, whichever comes first."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= max_runs or elapsed >= max_seconds:
            break
        if len(times) >= min_runs and elapsed >= min_seconds:
            break
    return np.asarray(times)


def measure_latency(session: Any, sample: np.ndarray, *, threads: int, batch: int = 1) -> Latency:
    """p50 / p90 / p99 over at least ``MIN_RUNS`` runs and ``MIN_SECONDS``, after warm-up."""
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(sample[:batch])}
    return measure_feed_latency(session, feed, threads=threads, batch=batch)


def measure_feed_latency(
    session: Any, feed: dict[str, np.ndarray], *, threads: int, batch: int = 1
) -> Latency:
    """:func:`measure_latency` of a run on ``feed``, every input given (a model with several
    inputs, or one whose batch the file fixes); ``batch`` is the samples one run takes."""
    for _ in range(WARMUP_RUNS):
        session.run(None, feed)
    ms = time_runs(session, feed, min_runs=MIN_RUNS, min_seconds=MIN_SECONDS) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Latency(
        p50=p50,
        p90=p90,
        p99=p99,
        runs=len(ms),
        threads=threads,
        batch=batch,
        provider=session.get_providers()[0],
    )


def predict(session: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Logits for every sample, in batches (one at a time when the file's batch is fixed)."""
    arg = session.get_inputs()[0]
    fixed = arg.shape[0] if isinstance(arg.shape[0], int) else None
    step = fixed or batch_size
    outputs = []
    for begin in range(0, len(x), step):
        chunk = x[begin : begin + step]
        if fixed is not None and len(chunk) < fixed:
            pad = np.zeros((fixed - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            out = session.run(None, {arg.name: np.concatenate([chunk, pad])})[0][: len(chunk)]
        else:
            out = session.run(None, {arg.name: chunk})[0]
        outputs.append(out)
    return np.concatenate(outputs)


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    """The fraction of samples whose largest logit is their label."""
    return float(np.mean(np.argmax(logits.reshape(len(y), -1), axis=1) == y))


def measure_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX file on ``x`` (all cores: this is not the latency run); an
    int8 file's integers are the device's on any host (:mod:`edgeopt.measure.int8`)."""
    from edgeopt.measure.int8 import make_exact_session

    session = make_exact_session(path, threads=os.cpu_count() or 1)
    return top1(predict(session, x), y)
