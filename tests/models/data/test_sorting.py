from __future__ import annotations

import itertools
import random

from models.data import sorting


def test_make_gives_the_argsort():
    values, order = sorting.make([30, 10, 20])
    assert order == (1, 2, 0)
    assert [values[i] for i in order] == sorted(values)


def test_samples_are_distinct_in_range():
    rng = random.Random(0)
    for _ in range(200):
        values, order = sorting.sample(rng, rng.randint(sorting.MIN_LEN, sorting.MAX_LEN))
        assert len(set(values)) == len(values)
        assert all(0 <= v < sorting.MAX_VALUE for v in values)
        assert sorted(order) == list(range(len(values)))


def test_deterministic_and_no_leakage():
    test = sorting.test_set(seed=0, n=300)
    assert test == sorting.test_set(seed=0, n=300)
    assert all(len(v) == sorting.TEST_LEN for v, _ in test)
    held = {v for v, _ in test}
    stream = sorting.train_stream(0, test)
    first = list(itertools.islice(stream, 2000))
    assert first == list(itertools.islice(sorting.train_stream(0, test), 2000))
    assert not held & {v for v, _ in first}
    assert {len(v) for v, _ in first} == set(range(sorting.MIN_LEN, sorting.MAX_LEN + 1))


def test_stream_skips_held_out_sequences():
    rng = random.Random(0)
    first = sorting.sample(rng, rng.randint(sorting.MIN_LEN, sorting.MAX_LEN))
    stream = sorting.train_stream(0, [first])
    assert next(stream) != first
