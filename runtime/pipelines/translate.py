"""translate: text BYTES [B] -> text BYTES [B] + attention FP32 [B, T_out, T_in] (+ lengths).

Streaming (`Prepared.on_step`, greedy decoding only): one partial answer per decoded token, the
same outputs as the whole answer: `text` [B] the piece this step adds to each row's text (empty
once the row has ended), `attention` [B, 1, T_in] that step's row (zeros once the row has ended),
`output_lengths` and `input_lengths` [B] as they stand after the step. Concatenated over the
stream, the texts and attention rows are the unary answer's. Beam search is not streamed: its
hypotheses change until the last step, so its whole answer is the one, final part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from runtime.config import ModelConfig
from runtime.decode import beam_search, greedy
from runtime.errors import InvalidInput
from runtime.pipelines.base import (
    UTF8_MAX,
    Outputs,
    Pipeline,
    Prepared,
    Runners,
    StepHook,
    T,
    bytes_tensor,
    decode_texts,
    vocab_file,
)
from runtime.stepwise import Plan
from runtime.text import EOS_ID, PAD_ID, Vocab, pad_rows

MAX_BEAM = 16


class TranslatePipeline(Pipeline):
    """Character seq2seq / Transformer: greedy or beam search over encoder + decoder_step."""

    task = "translate"
    inputs = (T("text", "bytes", "batch"),)
    outputs = (
        T("text", "bytes", "batch"),
        T("attention", "float32", "batch", "steps", "src_len"),
        T("output_lengths", "int64", "batch"),
        T("input_lengths", "int64", "batch"),
    )
    parameters = {"beam_size": int, "max_length": int}

    def __init__(self, config: ModelConfig, version_dir: Path) -> None:
        super().__init__(config, version_dir)
        if config.decode is None:
            raise ValueError(f"model {config.name}: a translate model needs a decode loop in config.yaml")
        self.loop = config.decode
        self.max_item_bytes = {"text": UTF8_MAX * config.max_input_length}
        self.src = Vocab.read(version_dir, vocab_file(config, "src"))
        self.tgt = Vocab.read(version_dir, vocab_file(config, "tgt"))

    @classmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return [b.decode("utf-8") for b in outputs["text"]]

    def options(self, params: Mapping[str, Any]) -> tuple[int, int]:
        self.check_params(params)
        beam = params.get("beam_size", 1)
        if not 1 <= beam <= MAX_BEAM:
            raise InvalidInput(f"beam_size must be between 1 and {MAX_BEAM}, got {beam}")
        limit = self.config.max_output_length
        max_length = params.get("max_length", limit)
        if not 1 <= max_length <= limit:
            raise InvalidInput(f"max_length must be between 1 and {limit}, got {max_length}")
        return beam, max_length

    def _limit_reason(self) -> str:
        """Why this model's inputs are bounded, where the bound is its attention's (not only the
        lengths it was trained on): location-based attention scores a fixed number of positions."""
        if self.config.attention == "location":
            return (
                f": its location-based attention scores a fixed {self.config.max_input_length} source positions "
                "(softmax(W s) has one row of W per position), so it cannot attend further"
            )
        return ""

    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
        self.check_inputs(inputs)
        beam, max_length = self.options(params)
        texts = decode_texts(inputs["text"], "text", self.config.max_input_length, self._limit_reason())
        ids = [self.src.encode(t) for t in texts]
        # Greedy rows are independent of how long the batch decodes (a row cut at its own
        # max_length is unchanged), so greedy requests of any max_length share a batch; a beam
        # keeps its hypotheses until the last step, so beam requests must agree on both.
        key = (1, 0) if beam == 1 else (beam, max_length)
        return Prepared(rows=len(ids), key=key, data=_Request(ids, max_length))

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        beam = cast(tuple[int, int], batch[0].key)[0]
        feeds = self.encoder_feeds(batch)
        steps = max(p.data.max_length for p in batch)
        enc, dec = runners["encoder"], runners["decoder_step"]
        if beam == 1:
            streaming = any(p.on_step is not None for p in batch)
            on_step = self._streamer(batch) if streaming else None
            ids, attn = greedy(self.loop, enc, dec, feeds, steps, on_step)  # [B, T], [B, T, S]
        else:
            ids, attn = beam_search(self.loop, enc, dec, feeds, steps, beam)
        results, start = [], 0
        for p in batch:
            rows = slice(start, start + p.rows)
            start += p.rows
            limit, width = p.data.max_length, int(self.source_lengths(p).max())
            results.append(self.answer(p, ids[rows, :limit], attn[rows, :limit, :width]))
        return results

    # --- streaming ------------------------------------------------------------------------

    def step_outputs(self, prepared: Prepared, tokens: np.ndarray, attention: np.ndarray) -> tuple[Outputs, bool]:
        """One request's partial answer after a greedy step (see the module), and whether it is its last.

        tokens [n, t]: the request's rows' tokens so far; attention [n, >= its source width]: the
        step's attention rows. Stateless, so any decode loop that sees the steps can stream: the
        iteration-level loop (runtime.stepwise) calls it with what a greedy Track's step hook
        receives, and hands the result to `prepared.on_step`.
        """
        t = tokens.shape[1]
        src_len = self.source_lengths(prepared)
        width = int(src_len.max())
        eos = tokens == EOS_ID  # [n, t]
        ended = np.where(eos.any(axis=1), eos.argmax(axis=1), t)  # [n] index of EOS, or t
        out_len = np.minimum(ended + 1, t)
        live = ended >= t - 1  # the row had not ended before this step
        pieces = []
        for row in tokens:
            before, now = self.tgt.decode(row[:-1].tolist()), self.tgt.decode(row.tolist())
            pieces.append(now[len(before) :])
        row_attn = attention[:, :width].astype(np.float32) * live[:, None]  # [n, S]
        final = t >= prepared.data.max_length or bool((ended < t).all())
        outputs = {
            "text": bytes_tensor(pieces),
            "attention": row_attn[:, None, :],  # [n, 1, S]
            "output_lengths": out_len.astype(np.int64),
            "input_lengths": src_len,
        }
        return outputs, final

    def _streamer(self, batch: Sequence[Prepared]) -> Callable[[np.ndarray, np.ndarray], None]:
        """A greedy step callback that hands each streamed request of `batch` its partial answer,
        until its final one (the batch may decode on for other requests)."""
        streams: list[tuple[Prepared, slice, StepHook]] = []  # the requests still streaming
        start = 0
        for p in batch:
            if p.on_step is not None:
                streams.append((p, slice(start, start + p.rows), p.on_step))
            start += p.rows

        def on_step(tokens: np.ndarray, attention: np.ndarray) -> None:  # [B, t], [B, S]
            for stream in list(streams):
                p, rows, hook = stream
                outputs, final = self.step_outputs(p, tokens[rows], attention[rows])
                if final:
                    streams.remove(stream)
                hook(outputs, final)

        return on_step

    # --- the seam of iteration-level decoding (runtime.stepwise) ---------------------------

    def encoder_feeds(self, batch: Sequence[Prepared]) -> dict[str, np.ndarray]:
        """The encoder's inputs for every item of `batch`, padded to the longest."""
        src_ids = pad_rows([row for p in batch for row in p.data.ids])  # [B, S]
        return {"src_ids": src_ids, "src_mask": src_ids != PAD_ID}

    def plan(self, prepared: Prepared) -> Plan:
        return Plan(beam=cast(tuple[int, int], prepared.key)[0], max_steps=prepared.data.max_length)

    def source_lengths(self, prepared: Prepared) -> np.ndarray:
        return np.array([len(r) for r in prepared.data.ids], dtype=np.int64)

    def answer(self, prepared: Prepared, ids: np.ndarray, attn: np.ndarray) -> Outputs:
        """One request's outputs from its decoded ids [n, T] and attention [n, T, its source width]."""
        return self._answer(ids, attn, self.source_lengths(prepared))

    def _answer(self, ids: np.ndarray, attn: np.ndarray, src_len: np.ndarray) -> Outputs:
        """One request's outputs from its rows' ids [n, T] and attention [n, T, S]."""
        # output length: the tokens up to and including EOS (or all, when max_length cut it)
        ends = [([*row.tolist(), EOS_ID]).index(EOS_ID) for row in ids]
        out_len = np.array([min(e + 1, ids.shape[1]) for e in ends], dtype=np.int64)
        steps = int(out_len.max())
        valid = np.arange(steps)[None, :] < out_len[:, None]  # [n, T]
        attention = attn[:, :steps] * valid[..., None]  # [n, T, S]
        return {
            "text": bytes_tensor([self.tgt.decode(row.tolist()) for row in ids]),
            "attention": attention.astype(np.float32),
            "output_lengths": out_len,
            "input_lengths": src_len,
        }


@dataclass(frozen=True)
class _Request:
    ids: list[list[int]]  # source ids per row, unpadded
    max_length: int
