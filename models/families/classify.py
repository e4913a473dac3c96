"""Document classification: the hierarchical attention network on `debian-docs`.

A raw input is a document's text (a Doc's `text`: short description first, sentences apart
by blank lines), split into sentences and words by `runtime.text` exactly as the server does; the
prediction is a label string. Labels are stored as a Vocab whose tokens are the four
specials followed by the class names, so class id = token id - len(SPECIALS).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.data import debian
from models.families.base import AttentionMap, Family, TaskData
from runtime.text import SPECIALS, Vocab, document_ids, document_words, split, split_sentences

ROW_LABEL_CHARS = 40  # attention-map row labels: sentences cut to this many characters
WIDTH_JITTER = 8.0  # batching: random words added to a doc's width before sorting


class HanFamily(Family):
    """HAN over word ids [B, S, W] with word and sentence masks."""

    name = "han"
    task = "debian-docs"
    metric = "accuracy"

    @staticmethod
    def load_data(seed: int) -> TaskData:
        del seed  # the split is fixed by the data (a hash of the source package)
        path = debian.ensure()
        docs = debian.load(path)
        meta_path = path.with_name(Path(path.name).stem + ".meta.json")
        meta: dict[str, Any] = {"path": str(path)}
        if meta_path.is_file():
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
            meta.update({k: stored[k] for k in ("lists_date", "total", "splits") if k in stored})
        return TaskData(
            train=[d for d in docs if d.split == "train"],
            test=[d for d in docs if d.split == "test"],
            meta=meta,
        )

    @classmethod
    def held_out(cls, seed: int, n: int) -> list[debian.Doc]:
        """The corpus's first `n` held-out docs, or the committed sample's when the corpus is absent
        (building it needs the apt lists, usually root): exporting needs neither."""
        del seed
        return debian.held_out(n)

    @staticmethod
    def build_vocabs(data: TaskData) -> dict[str, Vocab]:
        return {
            "words": Vocab.build((s for d in data.train for s in d.sentences), "word", min_count=2),
            "labels": Vocab([*SPECIALS, *debian.LABELS], "word"),
        }

    # --- labels ----------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return self.vocabs["labels"].tokens[len(SPECIALS) :]

    def label_id(self, label: str) -> int:
        try:
            return self.vocabs["labels"].index[label] - len(SPECIALS)
        except KeyError:
            raise ValueError(f"unknown label {label!r}; known: {self.labels}") from None

    # --- model -----------------------------------------------------------------------

    def model_config(self) -> dict[str, Any]:
        from models.han import HANConfig

        cfg = HANConfig(
            vocab=len(self.vocabs["words"]),
            num_classes=len(self.labels),
            attention=self.recipe.attention,
            **self.recipe.model,
        )
        return asdict(cfg)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        from models.han import HAN, HANConfig

        return HAN(HANConfig(**config))

    @cached_property
    def limits(self) -> tuple[int, int]:
        """(max_sents, max_words) of the model this family builds."""
        cfg = self.model_config()
        return cfg["max_sents"], cfg["max_words"]

    # --- encoding --------------------------------------------------------------------

    def tokenize(self, text: str) -> list[list[str]]:
        """Words of each kept sentence of a document text (runtime.text, as the server does)."""
        max_sents, max_words = self.limits
        return document_words(split_sentences(text), max_sents, max_words)

    def encode(self, docs: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """ids [B, S, W], word_mask [B, S, W], sent_mask [B, S] for raw documents."""
        feeds = document_ids(self.vocabs["words"], [self.tokenize(doc) for doc in docs])
        return tuple(torch.from_numpy(feeds[k]) for k in ("ids", "word_mask", "sent_mask"))  # type: ignore[return-value]

    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """Endless epochs of length-bucketed batches.

        Each epoch sorts the training docs by kept-sentence count, then by longest kept
        sentence (jittered by up to WIDTH_JITTER words, so batches differ between epochs),
        cuts them into batches and shuffles the batch order, all under `seed`.
        """
        rng = random.Random(seed)
        docs = list(data.train)
        if not docs:
            raise ValueError("no training documents")
        words = [self.tokenize(d.text) for d in docs]
        sizes = [len(w) for w in words]
        widths = [max(len(s) for s in w) for w in words]
        while True:
            noise = [rng.uniform(0, WIDTH_JITTER) for _ in docs]
            order = sorted(range(len(docs)), key=lambda i: (sizes[i], widths[i] + noise[i]))
            chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            rng.shuffle(chunks)
            for chunk in chunks:
                ids, word_mask, sent_mask = self.encode([docs[i].text for i in chunk])
                labels = torch.tensor([self.label_id(docs[i].label) for i in chunk])  # [B]
                yield {"ids": ids, "word_mask": word_mask, "sent_mask": sent_mask, "labels": labels}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, float]:
        logits, _, _ = model(batch["ids"], batch["word_mask"], batch["sent_mask"])  # [B, C]
        loss = F.cross_entropy(logits, batch["labels"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean().item()
        return loss, acc

    # --- inference -------------------------------------------------------------------

    @torch.no_grad()
    def classify(self, model: nn.Module, docs: Sequence[str]) -> tuple[Tensor, ...]:
        """Probabilities [B, C], word attention [B, S, W], sentence attention [B, S]."""
        model.eval()
        logits, word_attn, sent_attn = model(*self.encode(docs))
        return torch.softmax(logits, dim=-1), word_attn, sent_attn

    def predict(self, model: nn.Module, inputs: Sequence[str]) -> list[str]:
        if not inputs:
            return []
        probs = self.classify(model, inputs)[0]  # [B, C]
        return [self.labels[i] for i in probs.argmax(-1).tolist()]

    def source(self, example: debian.Doc) -> str:
        return example.text

    def target(self, example: debian.Doc) -> str:
        return example.label

    def parse(self, text: str) -> str:
        self.tokenize(text)  # ValueError when no sentence has a word
        return text

    def attention_map(self, model: nn.Module, raw: str) -> AttentionMap:
        words = self.tokenize(raw)
        kept = [s for s in split_sentences(raw) if split(s, "word")][: len(words)]
        probs, word_attn, sent_attn = self.classify(model, [raw])
        W = max(len(w) for w in words)
        rows = [s if len(s) <= ROW_LABEL_CHARS else s[: ROW_LABEL_CHARS - 1] + "…" for s in kept]
        best = int(probs[0].argmax())
        return AttentionMap(
            rows=rows,
            cols=[str(i) for i in range(W)],
            weights=word_attn[0, : len(words), :W].numpy(),
            prediction=self.labels[best],
            extra={
                "sentence_weights": sent_attn[0, : len(words)].tolist(),
                "words": words,
                "probabilities": dict(zip(self.labels, probs[0].tolist(), strict=True)),
            },
        )

    def baseline(self, data: TaskData) -> float | None:
        from models.baselines import tfidf_logreg_accuracy

        return tfidf_logreg_accuracy(data.train, data.test)
