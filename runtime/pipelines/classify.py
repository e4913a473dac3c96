"""classify: text BYTES [B] -> label BYTES [B], probabilities FP32 [B, C], word and sentence attention.

The server splits each document into sentences and words exactly as training did
(`models.data.debian.split_sentences`, `runtime.text.split`), keeping at most
`max_sentences` sentences of at most `max_input_length` words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.config import ModelConfig
from runtime.errors import InvalidInput
from runtime.pipelines.base import (
    UTF8_MAX,
    Outputs,
    Pipeline,
    Prepared,
    Runners,
    T,
    bytes_tensor,
    decode_texts,
    vocab_file,
)
from runtime.text import Vocab, document_ids, document_words, split_sentences

MAX_DOCUMENT_CHARS = 100_000


class ClassifyPipeline(Pipeline):
    """The hierarchical attention network: one `classify` graph."""

    task = "classify"
    inputs = (T("text", "bytes", "batch"),)
    outputs = (
        T("label", "bytes", "batch"),
        T("probabilities", "float32", "batch", "classes"),
        T("word_attention", "float32", "batch", "sentences", "words"),
        T("sentence_attention", "float32", "batch", "sentences"),
    )

    def __init__(self, config: ModelConfig, version_dir: Path) -> None:
        super().__init__(config, version_dir)
        self.words = Vocab.read(version_dir, vocab_file(config, "words"))
        self.max_item_bytes = {"text": UTF8_MAX * MAX_DOCUMENT_CHARS}
        if not config.labels:
            raise ValueError(f"model {config.name}: a classify model needs labels in config.yaml")

    @classmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return [b.decode("utf-8") for b in outputs["label"]]

    def tokenize(self, text: str, index: int) -> list[list[str]]:
        """Words per kept sentence (the model's limits applied)."""
        try:
            return document_words(split_sentences(text), self.config.max_sentences, self.config.max_input_length)
        except ValueError:
            raise InvalidInput(f"input 'text'[{index}] has no words to classify") from None

    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
        self.check_inputs(inputs)
        self.check_params(params)
        texts = decode_texts(inputs["text"], "text", MAX_DOCUMENT_CHARS)
        docs = [self.tokenize(t, i) for i, t in enumerate(texts)]
        return Prepared(rows=len(docs), key=(), data=docs)

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        # documents of any shape share a batch: padded words and sentences get exactly zero weight
        feeds = document_ids(self.words, [doc for p in batch for doc in p.data])
        out = runners["classify"](feeds)
        logits = out["logits"].astype(np.float64)  # [B, C]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        results, start = [], 0
        for p in batch:
            rows = slice(start, start + p.rows)
            start += p.rows
            sentences = max(len(doc) for doc in p.data)
            words = max(len(sentence) for doc in p.data for sentence in doc)
            results.append({
                "label": bytes_tensor([self.config.labels[i] for i in probs[rows].argmax(-1)]),
                "probabilities": probs[rows].astype(np.float32),
                "word_attention": out["word_attention"][rows, :sentences, :words].astype(np.float32),
                "sentence_attention": out["sentence_attention"][rows, :sentences].astype(np.float32),
            })  # fmt: skip
        return results

    def words_of(self, text: str) -> list[list[str]]:
        """The words the model sees for `text`, for labelling attention maps."""
        return self.tokenize(text, 0)
