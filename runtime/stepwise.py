"""Iteration-level decoding: one running decode batch that requests join and leave between steps.

The arithmetic of `runtime.decode.greedy` and `beam_search`, per request, on a batch whose rows
belong to different requests at different steps: a newcomer's encoder outputs join at the next
step (memory and masks padded to the batch's longest source), a finished or cancelled request's
rows leave at once. A request's rows (its items, times its beam) form one group: a beam reorders
its own hypotheses only, and each step's attention is kept to the request's own source width, so
a request decoded here answers as it would alone.

Decoders whose inputs grow with the step (`DecodeLoop.empty`: the Transformer's KV cache) put
rows at different steps. They share a batch when the decoder takes each row's step and a mask of
its real cached steps (`DecodeLoop.positions_input`, `cache_mask_input`): every row's cache is
left-padded to the batch's longest (a newcomer's is all padding, then grows at the end like the
others), and the padding columns that no row needs any more are cropped when long rows leave.
Without those inputs such a loop cannot share a batch across requests (`supports`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.decode import DecodeLoop, Runner
from runtime.tensors import Signature
from runtime.text import PAD_ID


def supports(loop: DecodeLoop | None) -> bool:
    """Whether requests of a model with this decode loop can share a running decode batch: no
    growing inputs, or a decoder told each row's step and which cached steps are real for it."""
    if loop is None:
        return False
    return not loop.empty or (loop.positions_input is not None and loop.cache_mask_input is not None)


@dataclass
class Plan:
    """How one request decodes: its beam and its step limit (a pointer network: its source length)."""

    beam: int
    max_steps: int


@dataclass(eq=False)
class Track:
    """One request in the running batch; `handle` is the caller's."""

    handle: Any
    plan: Plan
    src_len: np.ndarray  # [n] per item
    steps: int = 0
    finished: bool = False
    cancelled: bool = False  # set by the caller: its rows leave before the next step
    on_step: Callable[[Track], None] | None = None  # called after each of its steps (streaming)
    tokens: np.ndarray = field(init=False)  # [rows, steps]
    attn: np.ndarray = field(init=False)  # [rows, steps, width]
    done: np.ndarray = field(init=False)  # [rows]
    prev: np.ndarray = field(init=False)  # [rows]
    mask: np.ndarray = field(init=False)  # [rows, width]
    chosen: np.ndarray = field(init=False)  # [rows, width] (pointer)
    scores: np.ndarray = field(init=False)  # [n, beam]
    lengths: np.ndarray = field(init=False)  # [n, beam]

    @property
    def items(self) -> int:
        return len(self.src_len)

    @property
    def rows(self) -> int:
        return self.items * self.plan.beam

    @property
    def width(self) -> int:
        return int(self.src_len.max())

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """ids [n, steps] and attention [n, steps, width]: the best hypothesis of each item."""
        if self.plan.beam == 1:
            return self.tokens, self.attn
        norm = self.scores / np.maximum(self.lengths, 1)  # [n, K]
        chosen = np.arange(self.items) * self.plan.beam + norm.argmax(axis=1)
        return self.tokens[chosen], self.attn[chosen]


class DecodeBatch:
    """The running decode batch of one model (not thread-safe: one driver thread owns it)."""

    def __init__(self, loop: DecodeLoop, decoder: Signature) -> None:
        if not supports(loop):
            raise ValueError(
                "a decode loop with growing inputs (`empty`) batches across requests only with "
                "positions_input and cache_mask_input"
            )
        self.loop = loop
        specs = {t.name: t for t in decoder.inputs}
        source = specs[loop.mask_input].axes[1]  # the source-length symbol, e.g. "src_len"
        # decoder inputs carried per row (all but the step's token and masks), their batch and source axes
        carried = list(dict.fromkeys([*loop.from_encoder.values(), *loop.recurrent.values(), *loop.empty]))
        self.batch_axis = {name: loop.batch_axes.get(name, 0) for name in carried}
        self.source_axis = {name: specs[name].axes.index(source) for name in carried if source in specs[name].axes}
        # the growing inputs' time axis (the KV caches' "past_len"), named by the cache mask's axis 1
        self.cache_axis: dict[str, int] = {}
        if loop.cache_mask_input is not None:
            cache = specs[loop.cache_mask_input].axes[1]
            self.cache_axis = {name: specs[name].axes.index(cache) for name in loop.empty}
        self.tracks: list[Track] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.width = 0  # the padded source length of the batch
        self.cached = 0  # the padded cache length of the batch: its longest row's steps

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tracks)

    def join(self, tracks: Sequence[Track], encoded: dict[str, np.ndarray]) -> None:
        """Add requests whose items the encoder ran on together (`encoded`: its outputs, items in
        track order); their rows decode from the next step on."""
        items = np.concatenate([np.arange(t.items).repeat(t.plan.beam) + off for t, off in _offsets(tracks)])
        new = {
            dst: np.take(encoded[src], items, axis=self.batch_axis[dst]) for src, dst in self.loop.from_encoder.items()
        }
        rows = len(items)
        for name, shape in self.loop.empty.items():  # newcomers' caches: all padding, as long as the batch's
            empty = np.zeros([rows if s == -1 else s for s in shape], dtype=np.float32)
            new[name] = _pad(empty, self.cache_axis[name], self.cached, before=True)
        for t in tracks:
            self._start(t)
        width = max([self.width, *(t.width for t in tracks)])
        self._resize(width)
        new_width = max(t.width for t in tracks)
        for name, axis in self.source_axis.items():
            new[name] = _pad(new[name], axis, width - new_width)
        if self.tracks:
            self.feeds = {k: np.concatenate([self.feeds[k], new[k]], axis=self.batch_axis[k]) for k in new}
        else:
            self.feeds = new
        self.tracks.extend(tracks)

    def step(self, decoder: Runner) -> list[Track]:
        """One decoder step over every row; returns the requests that finished (they have left)."""
        self._drop([t for t in self.tracks if t.cancelled])
        if not self.tracks:
            return []
        loop = self.loop
        mask = np.zeros((self.rows, self.width), dtype=bool)  # [R, S]
        prev, offset = [], 0
        for t in self.tracks:
            step_mask = t.mask
            if loop.pointer:
                t.done = ~(t.mask & ~t.chosen).any(axis=1)
                # a finished row still needs one valid position to keep the graph's softmax defined
                step_mask = np.where(t.done[:, None], t.mask, t.mask & ~t.chosen)
            mask[offset : offset + t.rows, : t.width] = step_mask
            prev.append(t.prev)
            offset += t.rows
        steps = np.concatenate([np.full(t.rows, t.steps) for t in self.tracks])  # [R]: each row's cached steps
        cache_mask = np.arange(self.cached)[None, :] >= (self.cached - steps)[:, None]  # [R, P], left-padded
        at = loop.step_feeds(steps, cache_mask)
        out = decoder({**self.feeds, **at, loop.prev_input: np.concatenate(prev), loop.mask_input: mask})
        if self.cache_axis:
            self.cached += 1  # every row appended its step
        pick, offset = [], 0
        for t in self.tracks:
            rows = slice(offset, offset + t.rows)
            local = self._advance(t, out[loop.logits_output][rows], out[loop.attention_output][rows, : t.width])
            pick.append(local + offset)
            offset += t.rows
        order = np.concatenate(pick)
        for src, dst in loop.recurrent.items():
            self.feeds[dst] = np.take(out[src], order, axis=self.batch_axis[dst])
        for t in self.tracks:
            t.finished = self._finished(t)
            if t.on_step is not None:
                t.on_step(t)
        finished = [t for t in self.tracks if t.finished]
        self._drop(finished)
        return finished

    # --- one request's arithmetic (as runtime.decode) -------------------------------------

    def _start(self, t: Track) -> None:
        rows, width = t.rows, t.width
        t.tokens = np.zeros((rows, 0), dtype=np.int64)
        t.attn = np.zeros((rows, 0, width), dtype=np.float32)
        t.done = np.zeros(rows, dtype=bool)
        t.prev = np.full(rows, self.loop.start_id, dtype=np.int64)
        t.mask = np.arange(width)[None, :] < t.src_len.repeat(t.plan.beam)[:, None]
        t.chosen = np.zeros_like(t.mask)
        t.scores = np.full((t.items, t.plan.beam), -np.inf)
        t.scores[:, 0] = 0.0  # all hypotheses start identical: keep one
        t.lengths = np.zeros((t.items, t.plan.beam), dtype=np.int64)

    def _advance(self, t: Track, logits: np.ndarray, attn: np.ndarray) -> np.ndarray:
        """Take one step of `t` from its rows' logits and attention; returns its rows' new order."""
        loop = self.loop
        t.steps += 1
        if t.plan.beam > 1:
            return self._advance_beam(t, logits, attn)
        token = logits.argmax(axis=-1).astype(np.int64)  # [rows]
        if loop.pointer:
            token = np.where(t.done, -1, token)
            live = np.flatnonzero(~t.done)
            t.chosen[live, token[live]] = True
        else:
            token = np.where(t.done, PAD_ID, token)
            t.done = t.done | (token == loop.end_id)
        t.tokens = np.concatenate([t.tokens, token[:, None]], axis=1)
        t.attn = np.concatenate([t.attn, attn[:, None].astype(np.float32)], axis=1)
        t.prev = token
        return np.arange(t.rows)

    def _advance_beam(self, t: Track, logits: np.ndarray, attn: np.ndarray) -> np.ndarray:
        n, k = t.items, t.plan.beam
        logp = logits.astype(np.float64)  # [n*K, V]
        logp = logp - logp.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        logp[t.done] = -np.inf  # a finished hypothesis continues with PAD at no cost, and with nothing else
        logp[t.done, PAD_ID] = 0.0
        vocab = logp.shape[1]
        cand = (t.scores.reshape(-1, 1) + logp).reshape(n, k * vocab)  # [n, K*V]
        best = np.argsort(-cand, axis=1, kind="stable")[:, :k]  # [n, K]
        t.scores = np.take_along_axis(cand, best, axis=1)
        src_beam, token = best // vocab, best % vocab
        pick = (np.arange(n)[:, None] * k + src_beam).reshape(-1)  # [n*K]
        token = token.reshape(-1)
        t.lengths = t.lengths.reshape(-1)[pick].reshape(n, k) + (~t.done[pick]).reshape(n, k)
        t.done = t.done[pick] | (token == self.loop.end_id)
        t.tokens = np.concatenate([t.tokens[pick], token[:, None]], axis=1)
        t.attn = np.concatenate([t.attn[pick], attn[pick][:, None].astype(np.float32)], axis=1)
        t.prev = token
        return pick

    def _finished(self, t: Track) -> bool:
        if t.steps >= t.plan.max_steps:
            return True
        return not self.loop.pointer and bool(t.done.all())

    # --- rows joining and leaving -----------------------------------------------------------

    def _drop(self, gone: list[Track]) -> None:
        if not gone:
            return
        keep, offset = [], 0
        for t in self.tracks:
            if t not in gone:
                keep.append(np.arange(offset, offset + t.rows))
            offset += t.rows
        self.tracks = [t for t in self.tracks if t not in gone]
        if not self.tracks:
            self.feeds, self.width, self.cached = {}, 0, 0
            return
        index = np.concatenate(keep)
        self.feeds = {k: np.take(v, index, axis=self.batch_axis[k]) for k, v in self.feeds.items()}
        self._resize(max(t.width for t in self.tracks))
        self._crop_cache(max(t.steps for t in self.tracks))

    def _resize(self, width: int) -> None:
        """Pad (or crop) the source axis of every carried input to `width`."""
        if width == self.width:
            return
        for name, axis in self.source_axis.items():
            if name in self.feeds:
                array = self.feeds[name]
                if width > array.shape[axis]:
                    self.feeds[name] = _pad(array, axis, width - array.shape[axis])
                else:
                    self.feeds[name] = np.take(array, np.arange(width), axis=axis)
        self.width = width

    def _crop_cache(self, steps: int) -> None:
        """Drop the leading cache columns that are padding for every row left (caches are left-padded)."""
        if not self.cache_axis or steps >= self.cached:
            return
        for name, axis in self.cache_axis.items():
            array = self.feeds[name]
            self.feeds[name] = np.take(array, np.arange(array.shape[axis] - steps, array.shape[axis]), axis=axis)
        self.cached = steps


def _offsets(tracks: Sequence[Track]) -> list[tuple[Track, int]]:
    out, offset = [], 0
    for t in tracks:
        out.append((t, offset))
        offset += t.items
    return out


def _pad(array: np.ndarray, axis: int, extra: int, before: bool = False) -> np.ndarray:
    """`extra` zeros on `axis`, after the data (source axes) or before it (cache axes)."""
    if extra <= 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (extra, 0) if before else (0, extra)
    return np.pad(array, widths)
