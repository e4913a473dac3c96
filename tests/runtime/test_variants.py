"""The torch-free list of attention variants equals attnserve's own registered attention scores."""

from __future__ import annotations

from models.attention import own_attention_names
from runtime.variants import ATTENTION_VARIANTS, OTHER, attention_label


def test_the_closed_list_equals_the_registry():
    assert set(own_attention_names()) == ATTENTION_VARIANTS


def test_labels_come_from_the_closed_set():
    assert attention_label("additive") == "additive"
    assert attention_label("cosine") == OTHER  # a custom model's own variant, no package registers
    assert attention_label("x" * 1000) == OTHER
    assert OTHER not in ATTENTION_VARIANTS
