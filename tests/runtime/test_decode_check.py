"""A decode loop is checked against the encoder and decoder_step signatures it drives."""

from __future__ import annotations

import pytest

from runtime.decode import DecodeLoop
from runtime.tensors import Signature, TensorSpec
from tests.helpers.fakes import transformer_loop, transformer_signatures

T = TensorSpec.of
ENCODER = Signature(
    inputs=(T("src_ids", "int64", "batch", "src_len"), T("src_mask", "bool", "batch", "src_len")),
    outputs=(T("memory", "float32", "batch", "src_len", 8), T("state", "float32", "batch", 8)),
)
DECODER = Signature(
    inputs=(
        T("prev_ids", "int64", "batch"),
        T("state", "float32", "batch", 8),
        T("memory", "float32", "batch", "src_len", 8),
        T("src_mask", "bool", "batch", "src_len"),
    ),
    outputs=(
        T("logits", "float32", "batch", 15),
        T("new_state", "float32", "batch", 8),
        T("attention", "float32", "batch", "src_len"),
    ),
)
GOOD = {
    "start_id": 1,
    "end_id": 2,
    "from_encoder": {"memory": "memory", "state": "state"},
    "recurrent": {"new_state": "state"},
}


def test_a_loop_that_fits_has_no_mismatch():
    assert DecodeLoop(**GOOD).mismatches(ENCODER, DECODER) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"logits_output": "scores"}, "decode.logits_output names decoder_step output 'scores'"),
        ({"attention_output": "align"}, "decode.attention_output names decoder_step output 'align'"),
        ({"prev_input": "prev"}, "decode.prev_input names decoder_step input 'prev'"),
        ({"mask_input": "mask"}, "decode.mask_input names encoder input 'mask'"),
        ({"from_encoder": {"hidden": "memory", "state": "state"}}, "decode.from_encoder names encoder output 'hidden'"),
        ({"from_encoder": {"memory": "mem", "state": "state"}}, "decode.from_encoder names decoder_step input 'mem'"),
        ({"recurrent": {"state_out": "state"}}, "decode.recurrent names decoder_step output 'state_out'"),
        ({"from_encoder": {"memory": "memory"}}, "input(s) ['state'] have no value at the first step"),
        ({"empty": {"past": [-1, 2]}}, "decode.empty names decoder_step input 'past'"),
        ({"batch_axes": {"past": 1}}, "decode.batch_axes names decoder_step input 'past'"),
        ({"positions_input": "positions"}, "decode.positions_input names decoder_step input 'positions'"),
        ({"cache_mask_input": "cache_mask"}, "decode.cache_mask_input names decoder_step input 'cache_mask'"),
    ],
)
def test_each_name_the_graphs_lack_is_reported(change: dict, fragment: str):
    problems = DecodeLoop(**{**GOOD, **change}).mismatches(ENCODER, DECODER)
    assert any(fragment in p for p in problems), problems


def test_a_decoder_taking_per_row_steps_needs_a_loop_that_feeds_them():
    """The Transformer's decoder_step takes positions and cache_mask: a loop that names them fits, a
    loop written before them (no positions_input / cache_mask_input) leaves them unfed."""
    signatures = transformer_signatures(15)
    loop = transformer_loop()
    assert loop.mismatches(signatures["encoder"], signatures["decoder_step"]) == []
    before = loop.model_copy(update={"positions_input": None, "cache_mask_input": None})
    problems = before.mismatches(signatures["encoder"], signatures["decoder_step"])
    assert any("['cache_mask', 'positions'] have no value at the first step" in p for p in problems), problems
