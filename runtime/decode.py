"""Greedy decoding over component graphs (encoder + decoder_step), backend-agnostic, numpy only.

The loop is described by data (`DecodeLoop`, stored in the model repository) so the same
code drives ONNX Runtime sessions, PyTorch modules or any other backend's `infer`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from runtime.tensors import Signature
from runtime.text import PAD_ID

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]  # one component call: feeds -> outputs
# called after each greedy step with the tokens so far [B, t] and that step's attention [B, S] (streaming)
StepCallback = Callable[[np.ndarray, np.ndarray], None]


class DecodeLoop(BaseModel):
    """How encoder outputs, recurrent state and the previous token feed each decoder step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_id: int  # BOS, or -1 for a pointer network's "no previous position"
    end_id: int | None  # EOS; None for the pointer, which emits one position per input
    from_encoder: dict[str, str]  # encoder output -> decoder input
    recurrent: dict[str, str]  # decoder output -> decoder input of the next step
    empty: dict[str, list[int]] = {}  # decoder input -> initial shape (-1 = batch), e.g. an empty KV cache
    batch_axes: dict[str, int] = {}  # decoder input -> its batch axis when not 0 (KV caches: 1)
    pointer: bool = False  # outputs are input positions, each used once
    # Per-row steps, so rows at different steps share a call (runtime.stepwise): `positions_input`
    # [B] int64 is each row's step, `cache_mask_input` [B, P] bool the cached steps real for it.
    positions_input: str | None = None
    cache_mask_input: str | None = None
    mask_input: str = "src_mask"
    prev_input: str = "prev_ids"
    logits_output: str = "logits"
    attention_output: str = "attention"

    def mismatches(self, encoder: Signature, decoder: Signature) -> list[str]:
        """How this loop fails to fit the encoder and decoder_step graphs: names it reads or feeds
        that the graphs lack, and decoder inputs it never feeds. Empty when every step can run."""
        enc_in = {t.name for t in encoder.inputs}
        enc_out = {t.name for t in encoder.outputs}
        dec_in = {t.name for t in decoder.inputs}
        dec_out = {t.name for t in decoder.outputs}
        problems: list[str] = []

        def need(field: str, name: str, have: set[str], what: str) -> None:
            if name not in have:
                problems.append(f"decode.{field} names {what} '{name}', which the graph lacks (it has {sorted(have)})")

        for src, dst in self.from_encoder.items():
            need("from_encoder", src, enc_out, "encoder output")
            need("from_encoder", dst, dec_in, "decoder_step input")
        for src, dst in self.recurrent.items():
            need("recurrent", src, dec_out, "decoder_step output")
            need("recurrent", dst, dec_in, "decoder_step input")
        for name in self.empty:
            need("empty", name, dec_in, "decoder_step input")
        for name in self.batch_axes:
            need("batch_axes", name, dec_in, "decoder_step input")
        if self.positions_input is not None:
            need("positions_input", self.positions_input, dec_in, "decoder_step input")
        if self.cache_mask_input is not None:
            need("cache_mask_input", self.cache_mask_input, dec_in, "decoder_step input")
        need("mask_input", self.mask_input, enc_in, "encoder input")
        need("mask_input", self.mask_input, dec_in, "decoder_step input")
        need("prev_input", self.prev_input, dec_in, "decoder_step input")
        need("logits_output", self.logits_output, dec_out, "decoder_step output")
        need("attention_output", self.attention_output, dec_out, "decoder_step output")
        # the first step's feeds; recurrent outputs only replace them from the second step on
        first = {*self.from_encoder.values(), *self.empty, self.prev_input, self.mask_input, *self.step_inputs}
        unfed = sorted(dec_in - first)
        if unfed:
            problems.append(
                f"decoder_step input(s) {unfed} have no value at the first step (from_encoder, empty, "
                "prev_input, mask_input, positions_input and cache_mask_input feed it)"
            )
        return problems

    @property
    def step_inputs(self) -> list[str]:
        """The per-row step inputs this loop feeds (positions, cache mask), if any."""
        return [n for n in (self.positions_input, self.cache_mask_input) if n is not None]

    def step_feeds(self, steps: np.ndarray, cache_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The per-row step inputs for rows at `steps` [R] whose caches `cache_mask` [R, P] marks."""
        feeds: dict[str, np.ndarray] = {}
        if self.positions_input is not None:
            feeds[self.positions_input] = steps.astype(np.int64)
        if self.cache_mask_input is not None:
            feeds[self.cache_mask_input] = cache_mask.astype(bool)
        return feeds


def greedy(
    loop: DecodeLoop,
    encoder: Runner,
    decoder: Runner,
    enc_feeds: dict[str, np.ndarray],
    max_steps: int,
    on_step: StepCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding -> ids [B, T] int64 and attention [B, T, S] float32.

    Text: each row ends with end_id, then PAD_ID. Pointer: row b emits its len_b positions,
    then -1; T equals S. `on_step`, if given, sees every step as soon as it is decoded (a greedy
    token is final when chosen; beam search has no such callback: its hypotheses change until
    the last step).
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
    for step in range(steps):
        step_mask = mask
        if loop.pointer:
            done = ~(mask & ~chosen).any(axis=1)
            # a finished row still needs one valid position to keep the graph's softmax defined
            step_mask = np.where(done[:, None], mask, mask & ~chosen)
        at = loop.step_feeds(np.full(batch, step), np.ones((batch, step), dtype=bool))  # every row at `step`
        out = decoder({**feeds, **at, loop.prev_input: prev, loop.mask_input: step_mask})
        token = out[loop.logits_output].argmax(axis=-1).astype(np.int64)  # [B]
        if loop.pointer:
            token = np.where(done, -1, token)
            chosen[np.arange(batch)[~done], token[~done]] = True
        else:
            token = np.where(done, PAD_ID, token)
            done = done | (token == loop.end_id)
        ids.append(token)
        attn.append(out[loop.attention_output].astype(np.float32))
        if on_step is not None:
            on_step(np.stack(ids, axis=1), attn[-1])  # [B, t], [B, S]
        for src, dst in loop.recurrent.items():
            feeds[dst] = out[src]
        prev = token
        if not loop.pointer and done.all():
            break
    return np.stack(ids, axis=1), np.stack(attn, axis=1)


def _take(array: np.ndarray, rows: np.ndarray, axis: int) -> np.ndarray:
    return np.take(array, rows, axis=axis)


def beam_search(
    loop: DecodeLoop,
    encoder: Runner,
    decoder: Runner,
    enc_feeds: dict[str, np.ndarray],
    max_steps: int,
    beam_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Beam search -> the best hypothesis per row: ids [B, T] int64, attention [B, T, S] float32.

    Hypotheses are ranked by total log-probability divided by length (EOS included), so
    short outputs are not favoured. beam_size=1 equals greedy decoding.
    """
    if loop.pointer or loop.end_id is None:
        raise ValueError("beam search needs a text decoder with an end token")
    mask = enc_feeds[loop.mask_input].astype(bool)  # [B, S]
    batch, src_len = mask.shape
    K = beam_size
    rows = np.repeat(np.arange(batch), K)  # [B*K]: hypothesis -> source row
    enc_out = encoder(enc_feeds)
    feeds: dict[str, np.ndarray] = {
        dst: _take(enc_out[src], rows, loop.batch_axes.get(dst, 0)) for src, dst in loop.from_encoder.items()
    }
    for name, shape in loop.empty.items():
        feeds[name] = np.zeros([batch * K if s == -1 else s for s in shape], dtype=np.float32)
    beam_mask = mask[rows]  # [B*K, S]
    scores = np.full((batch, K), -np.inf, dtype=np.float64)
    scores[:, 0] = 0.0  # all hypotheses start identical: keep one
    lengths = np.zeros((batch, K), dtype=np.int64)
    prev = np.full(batch * K, loop.start_id, dtype=np.int64)
    done = np.zeros(batch * K, dtype=bool)
    tokens = np.zeros((batch * K, 0), dtype=np.int64)
    attn = np.zeros((batch * K, 0, src_len), dtype=np.float32)
    for step in range(max_steps):
        at = loop.step_feeds(np.full(batch * K, step), np.ones((batch * K, step), dtype=bool))
        out = decoder({**feeds, **at, loop.prev_input: prev, loop.mask_input: beam_mask})
        logits = out[loop.logits_output].astype(np.float64)  # [B*K, V]
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        # a finished hypothesis continues with PAD at no cost, and with nothing else
        logp[done] = -np.inf
        logp[done, PAD_ID] = 0.0
        vocab = logp.shape[1]
        cand = (scores.reshape(-1, 1) + logp).reshape(batch, K * vocab)  # [B, K*V]
        best = np.argsort(-cand, axis=1, kind="stable")[:, :K]  # [B, K]
        scores = np.take_along_axis(cand, best, axis=1)
        src_beam, token = best // vocab, best % vocab  # [B, K]
        pick = (np.arange(batch)[:, None] * K + src_beam).reshape(-1)  # [B*K]
        token = token.reshape(-1)
        lengths = lengths.reshape(-1)[pick].reshape(batch, K) + (~done[pick]).reshape(batch, K)
        done = done[pick] | (token == loop.end_id)
        tokens = np.concatenate([tokens[pick], token[:, None]], axis=1)
        step_attn = out[loop.attention_output][pick][:, None].astype(np.float32)  # [B*K, 1, S]
        attn = np.concatenate([attn[pick], step_attn], axis=1)
        for src, dst in loop.recurrent.items():
            feeds[dst] = _take(out[src], pick, loop.batch_axes.get(dst, 0))
        prev = token
        if done.all():
            break
    norm = scores / np.maximum(lengths, 1)  # [B, K]
    best_k = norm.argmax(axis=1)  # [B]
    chosen = np.arange(batch) * K + best_k
    return tokens[chosen], attn[chosen]
