"""Fuzz every untrusted input kind for a long while: no traceback, no signal, no limit exceeded.

    .venv/bin/python -m benchmarks.fuzz [--examples 20000] [--seed 0]

The seeds, mutations and runs are those of ``tests/fuzztools.py`` (``make test`` runs a few per
kind); here examples are drawn from a seeded generator and run in a worker process with a memory
limit (``--memory-gib``, address space) and a time limit per example (``--seconds``). An example
that raises anything but edgeopt's one-sentence refusal, exits the worker with a signal, or passes
a limit is a finding, recorded with the numbers that reproduce it. Results:
``benchmarks/results/fuzz.json`` (examples per kind, outcomes, findings, time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import save_result

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _example(rng: np.random.Generator, mutations: int) -> tuple[int, bytes, list[int]]:
    choice = int(rng.integers(0, mutations))
    data = rng.integers(0, 256, size=int(rng.integers(0, 257)), dtype=np.uint8).tobytes()
    positions = rng.integers(0, 2**31, size=int(rng.integers(1, 17))).tolist()
    return choice, data, positions


def _worker(
    seeds: dict[str, str], jobs: list[tuple[int, str, int]], limits: tuple[int, int], out: Any
) -> None:
    """Run ``jobs`` (index, kind, seed of the example) and send one result line per job."""
    sys.path.insert(0, str(TESTS))
    from fuzztools import MUTATIONS
    from fuzztools import kinds
    from fuzztools import mutate
    from fuzztools import run_example
    from fuzztools import seed_bytes

    memory, seconds = limits
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"ran past {seconds} s")

    signal.signal(signal.SIGALRM, expire)
    table = kinds({name: Path(path) for name, path in seeds.items()})
    blobs = {name: seed_bytes(kind) for name, kind in table.items()}
    with tempfile.TemporaryDirectory(prefix="edgeopt-fuzz-") as scratch:
        for index, name, example_seed in jobs:
            out.send(("start", index))
            choice, data, positions = _example(np.random.default_rng(example_seed), MUTATIONS)
            blob = mutate(blobs[name], choice, data, positions)
            start = time.perf_counter()
            signal.alarm(seconds)
            try:
                outcome = run_example(table[name], blob, Path(scratch))
            except MemoryError:
                outcome = "finding: MemoryError (the memory limit)"
            except BaseException as exc:  # noqa: BLE001  (every escape is a finding)
                last = traceback.format_exception(exc)[-1].strip()
                outcome = f"finding: {type(exc).__name__}: {last[:300]}"
            finally:
                signal.alarm(0)
            out.send(("done", index, outcome, time.perf_counter() - start))
    out.send(("end",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gib", type=float, default=4.0)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from fuzztools import make_seeds

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-fuzz-seeds-") as folder:
        seeds = {name: str(path) for name, path in make_seeds(Path(folder)).items()}
        names = sorted(seeds)
        rng = np.random.default_rng(args.seed)
        jobs = [
            (index, names[index % len(names)], int(rng.integers(0, 2**63)))
            for index in range(args.examples)
        ]
        limits = (int(args.memory_gib * 2**30), args.seconds)
        outcomes: dict[str, Counter[str]] = {name: Counter() for name in names}
        findings: list[dict[str, Any]] = []
        slowest = 0.0
        pending = jobs
        context = multiprocessing.get_context("fork")
        while pending:
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(target=_worker, args=(seeds, pending, limits, send))
            worker.start()
            send.close()
            running, finished = None, set()
            while True:
                try:
                    message = receive.recv()
                except EOFError:
                    break
                if message[0] == "start":
                    running = message[1]
                elif message[0] == "done":
                    _, index, outcome, seconds = message
                    finished.add(index)
                    slowest = max(slowest, seconds)
                    name = jobs[index][1]
                    outcomes[name][outcome.split(":")[0]] += 1
                    if outcome.startswith("finding"):
                        findings.append({"example": jobs[index], "outcome": outcome})
                    running = None
                    if len(finished) % 1000 == 0:
                        print(f"{len(finished)} of {len(pending)} examples", flush=True)
                elif message[0] == "end":
                    break
            worker.join()
            if running is not None:  # the worker died inside an example: a signal
                name = jobs[running][1]
                outcomes[name]["finding"] += 1
                findings.append(
                    {"example": jobs[running], "outcome": f"finding: signal {-worker.exitcode}"}
                )
                finished.add(running)
            pending = [job for job in pending if job[0] not in finished]
    seconds = time.perf_counter() - started
    summary = {
        "examples": args.examples,
        "seed": args.seed,
        "findings": len(findings),
        "seconds": round(seconds, 1),
        "slowest_example_seconds": round(slowest, 2),
        "memory_limit_gib": args.memory_gib,
        "time_limit_seconds": args.seconds,
        "per_kind": {name: dict(counts) for name, counts in outcomes.items()},
    }
    save_result("fuzz", {"summary": summary, "findings": findings})
    print(json.dumps(findings[:20], indent=1))


if __name__ == "__main__":
    main()
