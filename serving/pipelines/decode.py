"""Greedy decoding over component graphs (encoder + decoder_step), backend-agnostic, numpy only.

The loop is described by data (`DecodeLoop`, stored in the model repository) so the same
code drives ONNX Runtime sessions, PyTorch modules or any other backend's `infer`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
PAD_ID = 0


class DecodeLoop(BaseModel):
    """How encoder outputs, recurrent state and the previous token feed each decoder step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_id: int  # BOS, or -1 for a pointer network's "no previous position"
    end_id: int | None  # EOS; None for the pointer, which emits one position per input
    from_encoder: dict[str, str]  # encoder output -> decoder input
    recurrent: dict[str, str]  # decoder output -> decoder input of the next step
    empty: dict[str, list[int]] = {}  # decoder input -> initial shape (-1 = batch), e.g. an empty KV cache
    pointer: bool = False  # outputs are input positions, each used once
    mask_input: str = "src_mask"
    prev_input: str = "prev_ids"
    logits_output: str = "logits"
    attention_output: str = "attention"


def greedy(
    loop: DecodeLoop,
    encoder: Runner,
    decoder: Runner,
    enc_feeds: dict[str, np.ndarray],
    max_steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding -> ids [B, T] int64 and attention [B, T, S] float32.

    Text: each row ends with end_id, then PAD_ID. Pointer: row b emits its len_b positions,
    then -1; T equals S.
    """
    mask = enc_feeds[loop.mask_input].astype(bool)  # [B, S]
    batch, src_len = mask.shape
    enc_out = encoder(enc_feeds)
    feeds: dict[str, np.ndarray] = {dst: enc_out[src] for src, dst in loop.from_encoder.items()}
    for name, shape in loop.empty.items():
        feeds[name] = np.zeros([batch if s == -1 else s for s in shape], dtype=np.float32)
    prev = np.full(batch, loop.start_id, dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    chosen = np.zeros_like(mask)
    steps = src_len if loop.pointer else max_steps
    ids, attn = [], []
    for _ in range(steps):
        step_mask = mask
        if loop.pointer:
            done = ~(mask & ~chosen).any(axis=1)
            # a finished row still needs one valid position to keep the graph's softmax defined
            step_mask = np.where(done[:, None], mask, mask & ~chosen)
        out = decoder({**feeds, loop.prev_input: prev, loop.mask_input: step_mask})
        token = out[loop.logits_output].argmax(axis=-1).astype(np.int64)  # [B]
        if loop.pointer:
            token = np.where(done, -1, token)
            chosen[np.arange(batch)[~done], token[~done]] = True
        else:
            token = np.where(done, PAD_ID, token)
            done = done | (token == loop.end_id)
        ids.append(token)
        attn.append(out[loop.attention_output].astype(np.float32))
        for src, dst in loop.recurrent.items():
            feeds[dst] = out[src]
        prev = token
        if not loop.pointer and done.all():
            break
    return np.stack(ids, axis=1), np.stack(attn, axis=1)
