"""Fuzz every untrusted input kind (tests/fuzztools.py): random bytes and mutated real files must
be accepted or refused in one sentence, never raise anything else, within a time limit. A bounded
run; ``benchmarks/fuzz.py`` runs tens of thousands of examples with a memory limit too."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from fuzztools import HAS_TFLITE
from fuzztools import MUTATIONS
from fuzztools import kinds
from fuzztools import make_seeds
from fuzztools import mutate
from fuzztools import run_example
from fuzztools import seed_bytes

KINDS = [
    "onnx",
    "onnx-int8",
    "pt",
    "pt2",
    "edc",
    "npz",
    "idx",
    "wav",
    "png",
    "yaml-target",
    "yaml-recipe",
    *(["tflite"] if HAS_TFLITE else []),
]
EXAMPLES = 12
SECONDS = 30


@pytest.fixture(scope="module")
def fuzz_kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return kinds(make_seeds(tmp_path_factory.mktemp("seeds")))


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"an example ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_kinds_cover_every_input_and_their_seeds_are_accepted(
    fuzz_kinds: dict[str, Any], tmp_path: Path
) -> None:
    assert sorted(fuzz_kinds) == sorted(KINDS)
    for kind in fuzz_kinds.values():
        assert run_example(kind, seed_bytes(kind), tmp_path) in ("ok", "refused"), kind.name
    # the float ONNX file is refused by the C exporter ("quantize first"); the rest load
    outcomes = {k.name: run_example(k, seed_bytes(k), tmp_path) for k in fuzz_kinds.values()}
    assert outcomes.pop("onnx") == "refused" and set(outcomes.values()) == {"ok"}


@pytest.mark.parametrize("name", KINDS)
def test_mutated_input_is_accepted_or_refused_in_one_sentence(
    name: str, fuzz_kinds: dict[str, Any], tmp_path: Path
) -> None:
    kind = fuzz_kinds[name]
    seed = seed_bytes(kind)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.integers(0, MUTATIONS - 1),
        st.binary(max_size=256),
        st.lists(st.integers(0, 2**31), min_size=1, max_size=16),
    )
    def check(choice: int, data: bytes, positions: list[int]) -> None:
        with _time_limit(SECONDS):
            outcome = run_example(kind, mutate(seed, choice, data, positions), tmp_path)
        assert outcome.startswith(("ok", "refused"))

    check()
