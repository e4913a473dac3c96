"""translate: text BYTES [B] -> text BYTES [B] + attention FP32 [B, T_out, T_in] (+ lengths)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import ModelConfig
from runtime.decode import beam_search, greedy
from runtime.errors import InvalidInput
from runtime.pipelines.base import UTF8_MAX, Pipeline, Runners, T, bytes_tensor, decode_texts, vocab_file
from runtime.text import EOS_ID, Vocab, char_ids

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

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        ids, mask = char_ids(self.src, texts)  # [B, S], [B, S]
        return {"src_ids": ids, "src_mask": mask}

    def run(
        self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], runners: Runners
    ) -> dict[str, np.ndarray]:
        self.check_inputs(inputs)
        beam, max_length = self.options(params)
        texts = decode_texts(inputs["text"], "text", self.config.max_input_length)
        feeds = self.encode(texts)
        enc, dec = runners["encoder"], runners["decoder_step"]
        if beam == 1:
            ids, attn = greedy(self.loop, enc, dec, feeds, max_length)
        else:
            ids, attn = beam_search(self.loop, enc, dec, feeds, max_length, beam)
        # output length: the tokens up to and including EOS (or all, when max_length cut it)
        ends = [([*row.tolist(), EOS_ID]).index(EOS_ID) for row in ids]
        out_len = np.array([min(e + 1, ids.shape[1]) for e in ends], dtype=np.int64)
        steps = int(out_len.max())
        valid = np.arange(steps)[None, :] < out_len[:, None]  # [B, T]
        attention = attn[:, :steps] * valid[..., None]  # [B, T, S]
        return {
            "text": bytes_tensor([self.tgt.decode(row.tolist()) for row in ids]),
            "attention": attention.astype(np.float32),
            "output_lengths": out_len,
            "input_lengths": feeds["src_mask"].sum(axis=1).astype(np.int64),
        }
