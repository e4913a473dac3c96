"""`debian-translate`: English -> German package descriptions (models.data.translations), character
level, for the text-to-text families (GRU seq2seq with any attention, Transformer).

The task keeps the pairs of at most MAX_CHARS characters on both sides (short descriptions and
aligned long-body sentences); models read sources of up to MAX_CHARS characters and write up to
MAX_OUTPUT characters. The metric is chrF (sacrebleu, the train extra) on the 0-1 scale of every
zoo figure; the baseline is the better of copying the source and retrieving the nearest training
sentence's translation (models.baselines).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor, nn

from models.families.base import TaskData, pad
from models.families.text2text import Seq2SeqFamily, TransformerFamily
from runtime.text import PAD_ID

LANG = "de"
MAX_CHARS = 60  # both sides; location-based attention scores 64 positions
MAX_OUTPUT = 80  # decoded characters (German runs ~1.2x the English); the served max_output_length
BUCKET = 16  # a training draw of BUCKET batches is sorted by source length, then cut into batches


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2) on the 0-1 scale."""
    from sacrebleu.metrics import CHRF

    return CHRF().corpus_score(list(hypotheses), [list(references)]).score / 100


class TranslateTask:
    """The debian-translate task for a text-to-text family (mixed in before the family)."""

    task = "debian-translate"
    metric = "chrf"
    max_output_length = MAX_OUTPUT

    @staticmethod
    def load_data(seed: int) -> TaskData:
        """The corpus's pairs within MAX_CHARS (built, and fetched, when data/ has none)."""
        del seed  # the split is by source package, not random
        import json

        from models.data import translations

        path = translations.ensure(LANG)
        pairs = [p for p in translations.load(path) if translations.short_enough(p, MAX_CHARS)]
        meta_path = path.with_name(path.stem + ".meta.json")
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        return TaskData(
            train=[(p.en, p.xx) for p in pairs if p.split == "train"],
            test=[(p.en, p.xx) for p in pairs if p.split == "test"],
            meta={
                "lang": LANG,
                "max_chars": MAX_CHARS,
                **{k: meta[k] for k in ("suite", "release_date", "sha256") if k in meta},
            },
        )

    @classmethod
    def held_out(cls, seed: int, n: int) -> list[Any]:
        """The first `n` held-out pairs: the corpus's when built, else the committed sample's."""
        from models.data import translations

        return [(p.en, p.xx) for p in translations.held_out(LANG, n, MAX_CHARS)]

    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """Batches of similar source lengths (less padding): BUCKET batches' worth is drawn, sorted
        by length, cut, and the batches shuffled."""
        rng = random.Random(seed)
        tgt_vocab = self.vocabs["tgt"]  # type: ignore[attr-defined]
        while True:
            draw = sorted(rng.sample(data.train, batch_size * BUCKET), key=lambda ex: len(ex[0]))
            chunks = [draw[i : i + batch_size] for i in range(0, len(draw), batch_size)]
            rng.shuffle(chunks)
            for chunk in chunks:
                src, src_mask = self.encode_sources([s for s, _ in chunk])  # type: ignore[attr-defined]
                tgt = pad([tgt_vocab.encode(t, bos=True, eos=True) for _, t in chunk], PAD_ID)
                yield {"src": src, "src_mask": src_mask, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}

    def score(self, predictions: Sequence[str], examples: Sequence[Any]) -> float:
        """chrF of the predictions against the examples' references (0-1)."""
        return chrf(predictions, [ex[1] for ex in examples])

    def evaluate(self, model: nn.Module, test: Sequence[Any], batch_size: int = 256) -> dict[str, Any]:
        return self.scores_of(self.predictions(model, test, batch_size), test)  # type: ignore[attr-defined]

    def scores_of(self, predictions: Sequence[str], test: Sequence[Any]) -> dict[str, Any]:
        """The held-out record of predictions: chrF (0-1) as the metric, chrF and BLEU (0-100) with
        their signatures beside it."""
        from models.translation_eval import corpus_scores

        return {
            "metric": self.metric,
            "value": self.score(predictions, test),
            "n": len(test),
            **corpus_scores(predictions, [ex[1] for ex in test]),
        }

    @staticmethod
    def baseline_predictions(data: TaskData) -> dict[str, list[str]]:
        """The baselines' translations of the held-out sources: copy and nearest neighbour."""
        from models.baselines import copy_source, nearest_neighbour

        return {"copy": copy_source(data.test), "nearest-neighbour": nearest_neighbour(data.train, data.test)}

    def baseline(self, data: TaskData) -> float | None:
        """The better of the copy and nearest-neighbour baselines' chrF (0-1)."""
        refs = [t for _, t in data.test]
        return max(chrf(p, refs) for p in self.baseline_predictions(data).values())


class Seq2SeqTranslateFamily(TranslateTask, Seq2SeqFamily):  # type: ignore[misc]  # TranslateTask sets the int its families read
    """Seq2SeqFamily on debian-translate."""


class TransformerTranslateFamily(TranslateTask, TransformerFamily):  # type: ignore[misc]  # as above
    """TransformerFamily on debian-translate."""
