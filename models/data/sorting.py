"""`sorting`: order 5-15 distinct integers (the pointer network's task).

An example is (values, order) where order lists the positions of values in ascending order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

MAX_VALUE = 100  # values are drawn from [0, MAX_VALUE)
MIN_LEN, MAX_LEN = 5, 15
TEST_LEN = 10

Example = tuple[tuple[int, ...], tuple[int, ...]]


def make(values: list[int] | tuple[int, ...]) -> Example:
    """The example for `values`: its argsort as the target."""
    return tuple(values), tuple(sorted(range(len(values)), key=lambda i: values[i]))


def sample(rng: random.Random, length: int) -> Example:
    return make(rng.sample(range(MAX_VALUE), length))


def test_set(seed: int = 0, n: int = 2_000, length: int = TEST_LEN) -> list[Example]:
    """Held-out sequences of one length, distinct from each other."""
    rng = random.Random(seed + 10_007)
    seen: dict[tuple[int, ...], Example] = {}
    while len(seen) < n:
        ex = sample(rng, length)
        seen.setdefault(ex[0], ex)
    return list(seen.values())


def train_stream(seed: int, held_out: list[Example]) -> Iterator[Example]:
    """Endless training examples of length 5-15, never one of `held_out`."""
    rng = random.Random(seed)
    banned = {values for values, _ in held_out}
    while True:
        ex = sample(rng, rng.randint(MIN_LEN, MAX_LEN))
        if ex[0] not in banned:
            yield ex
