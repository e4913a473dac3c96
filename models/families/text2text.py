"""Text-to-text families (GRU seq2seq and Transformer) on the `dates` task."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.families.base import AttentionMap, Family, TaskData, pad
from runtime.text import PAD_ID, Vocab, char_ids

MAX_DECODE_LEN = 16  # ISO dates are 10 characters plus EOS


class Text2TextFamily(Family):
    """Shared logic: char vocabularies, teacher-forced loss, greedy decoding."""

    task = "dates"
    metric = "exact_match"
    max_output_length: int | None = None  # decoded tokens, where a task needs more than MAX_DECODE_LEN

    @staticmethod
    def load_data(seed: int) -> TaskData:
        from models.data import dates  # babel (the train extra): serving a checkpoint needs no data

        train, test = dates.splits(seed)
        return TaskData(train=train, test=test, meta={"locales": len(dates.LOCALES)})

    @staticmethod
    def build_vocabs(data: TaskData) -> dict[str, Vocab]:
        return {
            "src": Vocab.build((s for s, _ in data.train), "char"),
            "tgt": Vocab.build((t for _, t in data.train), "char"),
        }

    def encode_sources(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Source ids [B, S] and mask [B, S] (runtime.text.char_ids, as the server does);
        raises ValueError on empty text."""
        if not all(texts):
            raise ValueError("empty source text")
        ids, mask = char_ids(self.vocabs["src"], texts)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        rng = random.Random(seed)
        tgt_vocab = self.vocabs["tgt"]
        while True:
            chunk = rng.sample(data.train, batch_size)
            src, src_mask = self.encode_sources([s for s, _ in chunk])
            tgt = pad([tgt_vocab.encode(t, bos=True, eos=True) for _, t in chunk], PAD_ID)
            yield {"src": src, "src_mask": src_mask, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, float]:
        logits, _ = model(batch["src"], batch["src_mask"], batch["tgt_in"])  # [B, T, V]
        gold = batch["tgt_out"]  # [B, T]
        loss = F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=PAD_ID)
        valid = gold != PAD_ID
        acc = ((logits.argmax(-1) == gold) & valid).sum().item() / max(int(valid.sum()), 1)
        return loss, acc

    def decode(self, model: nn.Module, texts: Sequence[str]) -> tuple[list[str], Tensor, Tensor]:
        """Greedy outputs, their ids [B, T] and attention [B, T, S]."""
        model.eval()
        src, src_mask = self.encode_sources(texts)
        ids, attn = model.greedy(src, src_mask, self.max_output_length or MAX_DECODE_LEN)  # type: ignore[operator]  # nn.Module attributes are typed Tensor | Module
        return [self.vocabs["tgt"].decode(row.tolist()) for row in ids], ids, attn

    def predict(self, model: nn.Module, inputs: Sequence[str]) -> list[str]:
        return self.decode(model, inputs)[0]

    def source(self, example: tuple[str, str]) -> str:
        return example[0]

    def target(self, example: tuple[str, str]) -> str:
        return example[1]

    def parse(self, text: str) -> str:
        return text

    def attention_map(self, model: nn.Module, raw: str) -> AttentionMap:
        texts, ids, attn = self.decode(model, [raw])
        steps = len(texts[0]) + 1  # the output characters and EOS
        tgt = self.vocabs["tgt"]
        rows = [tgt.tokens[i] for i in ids[0, :steps].tolist()]
        return AttentionMap(
            rows=rows,
            cols=list(raw),
            weights=attn[0, :steps, : len(raw)].numpy(),
            prediction=texts[0],
        )


class Seq2SeqFamily(Text2TextFamily):
    """Bidirectional GRU encoder, GRU decoder with any registered attention."""

    name = "seq2seq"

    def model_config(self) -> dict[str, Any]:
        from models.seq2seq import Seq2SeqConfig

        cfg = Seq2SeqConfig(
            src_vocab=len(self.vocabs["src"]),
            tgt_vocab=len(self.vocabs["tgt"]),
            attention=self.recipe.attention,
            **self.recipe.model,
        )
        return asdict(cfg)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        from models.seq2seq import Seq2Seq, Seq2SeqConfig

        return Seq2Seq(Seq2SeqConfig(**config))


class TransformerFamily(Text2TextFamily):
    """Transformer encoder-decoder with its own multi-head attention and KV cache."""

    name = "transformer"

    def model_config(self) -> dict[str, Any]:
        from models.transformer import TransformerConfig

        cfg = TransformerConfig(
            src_vocab=len(self.vocabs["src"]),
            tgt_vocab=len(self.vocabs["tgt"]),
            **self.recipe.model,
        )
        return asdict(cfg)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        from models.transformer import Transformer, TransformerConfig

        return Transformer(TransformerConfig(**config))


class InTextTask:
    """`dates-in-text` (models.data.dates_in_text) for a text-to-text family: the date inside a
    sentence of 40-120 characters. A model whose source limit is shorter than a held-out sentence
    (location-based attention keeps its 64 positions) cannot read it: such sentences count as
    misses, and the metrics say how many there were and the figure on the rest."""

    task = "dates-in-text"

    @staticmethod
    def load_data(seed: int) -> TaskData:
        from models.data import dates, dates_in_text

        train, test = dates_in_text.splits(seed)
        return TaskData(train=train, test=test, meta={"locales": len(dates.LOCALES)})

    @classmethod
    def held_out(cls, seed: int, n: int) -> list[Any]:
        """The first `n` held-out sentences, without the training ones (their dates are disjoint)."""
        from models.data import dates_in_text

        return dates_in_text.held_out_split(seed)[:n]

    def source_limit(self) -> int:
        model = self.recipe.model  # type: ignore[attr-defined]
        return int(model.get("max_src_len", model.get("max_len", 64)))

    def readable(self, example: tuple[str, str]) -> bool:
        return len(example[0]) <= self.source_limit()

    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        fits = TaskData(train=[ex for ex in data.train if self.readable(ex)], test=data.test, meta=data.meta)
        return super().batches(fits, batch_size, seed)  # type: ignore[misc]

    def evaluate(self, model: nn.Module, test: Sequence[Any], batch_size: int = 256) -> dict[str, Any]:
        """Exact match over every held-out sentence (those beyond the source limit count as misses),
        the figure on those within it, and which fields of the date the misses got wrong."""
        from models.data.dates_in_text import field_errors

        limit = self.source_limit()
        fits = [ex for ex in test if self.readable(ex)]
        predictions = self.predictions(model, fits, batch_size)  # type: ignore[attr-defined]
        targets = [ex[1] for ex in fits]
        hits = sum(p == t for p, t in zip(predictions, targets, strict=True))
        return {
            "metric": self.metric,  # type: ignore[attr-defined]
            "value": hits / max(len(test), 1),
            "n": len(test),
            "beyond_source_limit": len(test) - len(fits),
            "source_limit": limit,
            "value_within_limit": hits / max(len(fits), 1),
            "errors_by_field": field_errors(predictions, targets),
        }


class Seq2SeqInTextFamily(InTextTask, Seq2SeqFamily):
    """Seq2SeqFamily on dates-in-text."""


class TransformerInTextFamily(InTextTask, TransformerFamily):
    """TransformerFamily on dates-in-text."""
