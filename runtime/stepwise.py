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

The batch keeps its state per row, not per request, so that a step costs a few array operations
whatever the number of requests in it: each row's previous token, done flag, step count and step
limit, its source mask, and the slot of its history (tokens and attention so far) in buffers that
grow as needed and whose slots rows free when they leave. Only beam requests (their hypotheses
reorder within the request) and streamed ones (a callback each) cost per-request work each step;
joining and leaving cost work per request that joins or leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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


StepHook = Callable[["Track", np.ndarray, np.ndarray], None]
"""Called after each step of a request with its ids so far [rows, t] and that step's attention
[rows, its width]: new arrays, which the batch never changes."""


@dataclass(eq=False)
class Track:
    """One request in the running batch; `handle` is the caller's. Its decoding state lives in the
    batch while it decodes; `steps`, `tokens` and `attn` are set when it finishes."""

    handle: Any
    plan: Plan
    src_len: np.ndarray  # [n] per item
    cancelled: bool = False  # set by the caller: its rows leave before the next step
    on_step: StepHook | None = None  # called after each of its steps (streaming)
    steps: int = 0
    finished: bool = False
    tokens: np.ndarray = field(init=False, repr=False)  # [rows, steps]
    attn: np.ndarray = field(init=False, repr=False)  # [rows, steps, width]
    scores: np.ndarray = field(init=False, repr=False)  # [n, beam] (beam)
    lengths: np.ndarray = field(init=False, repr=False)  # [n, beam] (beam)

    items: int = field(init=False)  # fixed once the track exists (its src_len and plan never change)
    rows: int = field(init=False)
    width: int = field(init=False)

    def __post_init__(self) -> None:
        self.items = len(self.src_len)
        self.rows = self.items * self.plan.beam
        self.width = int(self.src_len.max())

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """ids [n, steps] and attention [n, steps, width]: the best hypothesis of each item."""
        if self.plan.beam == 1:
            return self.tokens, self.attn
        norm = self.scores / np.maximum(self.lengths, 1)  # [n, K]
        chosen = np.arange(self.items) * self.plan.beam + norm.argmax(axis=1)
        return self.tokens[chosen], self.attn[chosen]


class DecodeBatch:
    """The running decode batch of one model (not thread-safe: one driver thread owns it).

    Rows are grouped by request, in `tracks` order. Per row [R]: `_prev`, `_done`, `_steps`,
    `_limit` (its request's max_steps), `_slot` (its history's row in `_tokens` [slots, T] and
    `_attn` [slots, T, W]), `_mask` [R, width] and, for a pointer network, `_chosen` [R, width].
    Per request [N]: `_sizes` (rows), `_widths`, `_starts` (first row)."""

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
        self._tokens = np.zeros((0, 0), dtype=np.int64)  # [slots, T]: each slot's ids so far
        self._attn = np.zeros((0, 0, 0), dtype=np.float32)  # [slots, T, W]: and its attention
        self._free: list[int] = []  # history slots no row holds
        self._empty()

    def _empty(self) -> None:
        """No rows: the state of an empty batch (the history buffers stay, all slots free)."""
        self.tracks, self.feeds, self.width, self.cached = [], {}, 0, 0
        self._prev = np.zeros(0, dtype=np.int64)  # [R]
        self._done = np.zeros(0, dtype=bool)  # [R]
        self._steps = np.zeros(0, dtype=np.int64)  # [R]
        self._limit = np.zeros(0, dtype=np.int64)  # [R]
        self._slot = np.zeros(0, dtype=np.int64)  # [R]
        self._mask = np.zeros((0, 0), dtype=bool)  # [R, width]
        self._chosen = np.zeros((0, 0), dtype=bool)  # [R, width]
        self._sizes = np.zeros(0, dtype=np.int64)  # [N]
        self._widths = np.zeros(0, dtype=np.int64)  # [N]
        self._special = 0  # requests that need work of their own each step (beam, streamed)
        self._index()

    @property
    def rows(self) -> int:
        return len(self._prev)

    def join(self, tracks: Sequence[Track], encoded: dict[str, np.ndarray]) -> None:
        """Add requests whose items the encoder ran on together (`encoded`: its outputs, items in
        track order); their rows decode from the next step on."""
        if all(t.plan.beam == 1 for t in tracks):  # a row per item, in order
            new = {dst: encoded[src] for src, dst in self.loop.from_encoder.items()}
            src_len = np.concatenate([t.src_len for t in tracks])  # [rows]
        else:
            items = np.concatenate([np.arange(t.items).repeat(t.plan.beam) + off for t, off in _offsets(tracks)])
            new = {
                dst: np.take(encoded[src], items, axis=self.batch_axis[dst])
                for src, dst in self.loop.from_encoder.items()
            }
            src_len = np.concatenate([t.src_len.repeat(t.plan.beam) for t in tracks])  # [rows]
        rows = len(src_len)
        for name, shape in self.loop.empty.items():  # newcomers' caches: all padding, as long as the batch's
            empty = np.zeros([rows if s == -1 else s for s in shape], dtype=np.float32)
            new[name] = _pad(empty, self.cache_axis[name], self.cached, before=True)
        sizes = np.array([t.rows for t in tracks], dtype=np.int64)  # [n]
        widths = np.array([t.width for t in tracks], dtype=np.int64)  # [n]
        limits = np.array([t.plan.max_steps for t in tracks], dtype=np.int64)  # [n]
        new_width = int(widths.max())
        width = max(self.width, new_width)
        self._resize(width)
        for name, axis in self.source_axis.items():
            new[name] = _pad(new[name], axis, width - new_width)
        if self.tracks:
            self.feeds = {k: np.concatenate([self.feeds[k], new[k]], axis=self.batch_axis[k]) for k in new}
        else:
            self.feeds = new
        slots = self._allocate(rows, int(limits.max()))
        mask = np.arange(width)[None, :] < src_len[:, None]  # [rows, width]
        self._prev = np.concatenate([self._prev, np.full(rows, self.loop.start_id, dtype=np.int64)])
        self._done = np.concatenate([self._done, np.zeros(rows, dtype=bool)])
        self._steps = np.concatenate([self._steps, np.zeros(rows, dtype=np.int64)])
        self._limit = np.concatenate([self._limit, limits.repeat(sizes)])
        self._slot = np.concatenate([self._slot, slots])
        self._mask = np.concatenate([self._mask, mask])
        if self.loop.pointer:
            self._chosen = np.concatenate([self._chosen, np.zeros_like(mask)])
        self._sizes = np.concatenate([self._sizes, sizes])
        self._widths = np.concatenate([self._widths, widths])
        for t in tracks:
            if t.plan.beam > 1:
                t.scores = np.full((t.items, t.plan.beam), -np.inf)
                t.scores[:, 0] = 0.0  # all hypotheses start identical: keep one
                t.lengths = np.zeros((t.items, t.plan.beam), dtype=np.int64)
            self._special += _special(t)
        self.tracks.extend(tracks)
        self._index()

    def step(self, decoder: Runner) -> list[Track]:
        """One decoder step over every row; returns the requests that finished (they have left)."""
        if any(t.cancelled for t in self.tracks):
            self._leave(np.array([i for i, t in enumerate(self.tracks) if t.cancelled]))
        if not self.tracks:
            return []
        loop = self.loop
        mask = self._mask  # [R, S]
        if loop.pointer:
            open_ = mask & ~self._chosen
            self._done = cast(np.ndarray, ~open_.any(axis=1))  # [R]
            # a finished row still needs one valid position to keep the graph's softmax defined
            mask = np.where(self._done[:, None], mask, open_)
        feeds = {**self.feeds, loop.prev_input: self._prev, loop.mask_input: mask}
        if loop.step_inputs:
            cache_mask = np.arange(self.cached)[None, :] >= (self.cached - self._steps)[:, None]  # [R, P], left-padded
            feeds.update(loop.step_feeds(self._steps, cache_mask))
        out = decoder(feeds)
        if self.cache_axis:
            self.cached += 1  # every row appended its step
        attn = out[loop.attention_output]  # [R, S]
        done, steps = self._done, self._steps
        token = out[loop.logits_output].argmax(axis=-1).astype(np.int64)  # [R]
        if loop.pointer:
            token[done] = -1
            live = np.flatnonzero(~done)
            self._chosen[live, token[live]] = True
        else:
            token[done] = PAD_ID
            self._done = done | (token == loop.end_id)
        self._tokens[self._slot, steps] = token
        self._attn[self._slot, steps, : self.width] = attn
        order = self._advance_beams(out[loop.logits_output], done, token) if self._beams else None
        self._prev = token
        self._steps = steps = steps + 1
        for src, dst in loop.recurrent.items():
            self.feeds[dst] = out[src] if order is None else np.take(out[src], order, axis=self.batch_axis[dst])
        for i, t in self._streams:
            rows = slice(self._starts[i], self._starts[i] + t.rows)
            t.on_step(t, self._tokens[self._slot[rows], : steps[rows.start]], attn[rows, : t.width].copy())  # type: ignore[misc]
        ended = steps >= self._limit  # [R]
        if not loop.pointer:
            ended |= self._done
        if len(self.tracks) < len(ended):  # all of a request's rows must be done
            ended = np.logical_and.reduceat(ended, self._starts)
        gone = np.flatnonzero(ended)  # [finished]
        if not len(gone):
            return []
        finished = []
        for i in gone.tolist():
            t, start = self.tracks[i], self._starts[i]
            slots, t.steps = self._slot[start : start + t.rows], int(steps[start])
            t.tokens = self._tokens[slots, : t.steps]
            t.attn = self._attn[slots, : t.steps, : t.width]
            t.finished = True
            finished.append(t)
        self._leave(gone)
        return finished

    # --- beam requests' arithmetic (as runtime.decode.beam_search) --------------------------

    def _advance_beams(self, logits: np.ndarray, done: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Take this step of the beam requests, whose rows' tokens the greedy rule has just
        written: replace them with each beam's choice, reordering its hypotheses. `done`: the
        rows' flags before the step. Returns every row's new order (greedy rows keep theirs)."""
        order = np.arange(self.rows)
        for i, t in self._beams:
            start = self._starts[i]
            rows = slice(start, start + t.rows)
            pick, token[rows], self._done[rows] = self._advance_beam(t, logits[rows], done[rows])
            slots, step = self._slot[rows], self._steps[start]
            self._tokens[slots, : step + 1] = self._tokens[slots[pick], : step + 1]
            self._tokens[slots, step] = token[rows]
            self._attn[slots, : step + 1] = self._attn[slots[pick], : step + 1]  # this step's with its hypothesis
            order[rows] = start + pick
        return order

    def _advance_beam(
        self, t: Track, logits: np.ndarray, done: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step of beam request `t` from its rows' logits [n*K, V] and done flags [n*K]:
        its rows' new order, tokens and done flags."""
        n, k = t.items, t.plan.beam
        logp = logits.astype(np.float64)  # [n*K, V]
        logp = logp - logp.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        logp[done] = -np.inf  # a finished hypothesis continues with PAD at no cost, and with nothing else
        logp[done, PAD_ID] = 0.0
        vocab = logp.shape[1]
        cand = (t.scores.reshape(-1, 1) + logp).reshape(n, k * vocab)  # [n, K*V]
        best = np.argsort(-cand, axis=1, kind="stable")[:, :k]  # [n, K]
        t.scores = np.take_along_axis(cand, best, axis=1)
        src_beam, token = best // vocab, best % vocab
        pick = (np.arange(n)[:, None] * k + src_beam).reshape(-1)  # [n*K]
        token = token.reshape(-1)
        t.lengths = t.lengths.reshape(-1)[pick].reshape(n, k) + (~done[pick]).reshape(n, k)
        return pick, token, done[pick] | (token == self.loop.end_id)

    # --- rows joining and leaving -----------------------------------------------------------

    def _index(self) -> None:
        """Per-request lookups, after requests joined or left."""
        self._starts = self._sizes.cumsum() - self._sizes  # [N]
        special = [(i, t) for i, t in enumerate(self.tracks) if _special(t)] if self._special else []
        self._beams = [(i, t) for i, t in special if t.plan.beam > 1]
        self._streams = [(i, t) for i, t in special if t.on_step is not None]

    def _allocate(self, rows: int, steps: int) -> np.ndarray:
        """History slots for `rows` new rows of at most `steps` steps, the buffers grown as needed."""
        slots, steps_cap = self._tokens.shape
        if steps > steps_cap:
            self._tokens = _pad(self._tokens, 1, steps - steps_cap)
            self._attn = _pad(self._attn, 1, steps - steps_cap)
        if rows > len(self._free):
            grow = max(rows - len(self._free), slots)  # at least double
            self._tokens = _pad(self._tokens, 0, grow)
            self._attn = _pad(self._attn, 0, grow)
            self._free.extend(range(slots + grow - 1, slots - 1, -1))
        taken = self._free[len(self._free) - rows :]
        del self._free[len(self._free) - rows :]
        return np.array(taken, dtype=np.int64)

    def _leave(self, gone: np.ndarray) -> None:
        """Take the requests at these indices of `tracks` out of the batch."""
        keep = np.ones(len(self.tracks), dtype=bool)
        keep[gone] = False
        stay = keep if len(keep) == len(self._prev) else np.repeat(keep, self._sizes)  # [R]
        self._free.extend(self._slot[~stay].tolist())
        self._special -= sum(_special(self.tracks[i]) for i in gone.tolist()) if self._special else 0
        self.tracks = [t for t, k in zip(self.tracks, keep.tolist(), strict=True) if k]
        if not self.tracks:
            self._empty()
            return
        index = np.flatnonzero(stay)  # [R']
        self.feeds = {k: np.take(v, index, axis=self.batch_axis[k]) for k, v in self.feeds.items()}
        self._prev, self._done, self._steps = self._prev[index], self._done[index], self._steps[index]
        self._limit, self._slot, self._mask = self._limit[index], self._slot[index], self._mask[index]
        if self.loop.pointer:
            self._chosen = self._chosen[index]
        self._sizes, self._widths = self._sizes[keep], self._widths[keep]
        self._index()
        self._resize(int(self._widths.max()))
        self._crop_cache(int(self._steps.max()))

    def _resize(self, width: int) -> None:
        """Pad (or crop) the source axis of every carried input and of the row masks to `width`."""
        if width == self.width:
            return
        for name, axis in self.source_axis.items():
            if name in self.feeds:
                array = self.feeds[name]
                if width > array.shape[axis]:
                    self.feeds[name] = _pad(array, axis, width - array.shape[axis])
                else:
                    self.feeds[name] = np.take(array, np.arange(width), axis=axis)
        extra = width - self.width
        if extra > 0:
            self._mask, self._chosen = _pad(self._mask, 1, extra), _pad(self._chosen, 1, extra)
        else:
            self._mask, self._chosen = self._mask[:, :width], self._chosen[:, :width]
        if width > self._attn.shape[2]:
            self._attn = _pad(self._attn, 2, width - self._attn.shape[2])
        self.width = width

    def _crop_cache(self, steps: int) -> None:
        """Drop the leading cache columns that are padding for every row left (caches are left-padded)."""
        if not self.cache_axis or steps >= self.cached:
            return
        for name, axis in self.cache_axis.items():
            array = self.feeds[name]
            self.feeds[name] = np.take(array, np.arange(array.shape[axis] - steps, array.shape[axis]), axis=axis)
        self.cached = steps


def _special(t: Track) -> bool:
    """Whether a request needs work of its own each step: a beam's, or a callback."""
    return t.plan.beam > 1 or t.on_step is not None


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
    shape = list(array.shape)
    shape[axis] += extra
    out = np.zeros(shape, dtype=array.dtype)
    at = [slice(None)] * array.ndim
    at[axis] = slice(extra, None) if before else slice(0, array.shape[axis])
    out[tuple(at)] = array
    return out
