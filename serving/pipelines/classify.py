"""classify: text BYTES [B] -> label BYTES [B], probabilities FP32 [B, C], word and sentence attention.

The server splits each document into sentences and words exactly as training did
(`models.data.debian.split_sentences`, `models.tokenizers.split`), keeping at most
`max_sentences` sentences of at most `max_input_length` words.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.data.debian import split_sentences
from models.tokenizers import PAD_ID, UNK_ID, Vocab, split
from serving.config import ModelConfig
from serving.errors import InvalidInput
from serving.pipelines.base import Pipeline, Runners, TensorMeta, bytes_tensor, decode_texts

MAX_DOCUMENT_CHARS = 100_000


class ClassifyPipeline(Pipeline):
    """The hierarchical attention network: one `classify` graph."""

    task = "classify"
    inputs = (TensorMeta("text", "BYTES", (-1,)),)
    outputs = (
        TensorMeta("label", "BYTES", (-1,)),
        TensorMeta("probabilities", "FP32", (-1, -1)),
        TensorMeta("word_attention", "FP32", (-1, -1, -1)),
        TensorMeta("sentence_attention", "FP32", (-1, -1)),
    )

    def __init__(self, config: ModelConfig, version_dir: Path) -> None:
        super().__init__(config, version_dir)
        self.words = Vocab.load(version_dir / config.vocabs["words"])
        if not config.labels:
            raise ValueError(f"model {config.name}: a classify model needs labels in config.yaml")

    def tokenize(self, text: str, index: int) -> list[list[str]]:
        """Words per kept sentence (the model's limits applied)."""
        sentences = [w for w in (split(s, "word") for s in split_sentences(text)) if w]
        if not sentences:
            raise InvalidInput(f"input 'text'[{index}] has no words to classify")
        limit = self.config.max_input_length
        return [w[:limit] for w in sentences[: self.config.max_sentences]]

    def encode(self, docs: list[list[list[str]]]) -> dict[str, np.ndarray]:
        S = max(len(d) for d in docs)
        W = max(len(s) for d in docs for s in d)
        ids = np.full((len(docs), S, W), PAD_ID, dtype=np.int64)  # [B, S, W]
        for b, doc in enumerate(docs):
            for s, words in enumerate(doc):
                ids[b, s, : len(words)] = [self.words.index.get(w, UNK_ID) for w in words]
        word_mask = ids != PAD_ID  # [B, S, W]
        return {"ids": ids, "word_mask": word_mask, "sent_mask": word_mask.any(axis=-1)}

    def run(
        self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], runners: Runners
    ) -> dict[str, np.ndarray]:
        self.check_inputs(inputs)
        self.check_params(params)
        texts = decode_texts(inputs["text"], "text", MAX_DOCUMENT_CHARS)
        feeds = self.encode([self.tokenize(t, i) for i, t in enumerate(texts)])
        out = runners["classify"](feeds)
        logits = out["logits"].astype(np.float64)  # [B, C]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return {
            "label": bytes_tensor([self.config.labels[i] for i in probs.argmax(-1)]),
            "probabilities": probs.astype(np.float32),
            "word_attention": out["word_attention"].astype(np.float32),
            "sentence_attention": out["sentence_attention"].astype(np.float32),
        }

    def words_of(self, text: str) -> list[list[str]]:
        """The words the model sees for `text`, for labelling attention maps."""
        return self.tokenize(text, 0)
