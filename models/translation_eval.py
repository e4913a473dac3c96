"""Translation figures beyond the training metric: chrF and BLEU with sacrebleu's signatures,
paired-bootstrap 95 % intervals, and quality by source length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 1000
LENGTH_BINS: tuple[tuple[int, int], ...] = ((1, 20), (21, 30), (31, 40), (41, 50), (51, 60))


def _metrics() -> tuple[Any, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    return CHRF(), BLEU()


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """chrF and BLEU (0-100, sacrebleu defaults) and their signatures."""
    chrf, bleu = _metrics()
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    return {
        "chrf": round(c.score, 2),
        "bleu": round(b.score, 2),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_signature": str(bleu.get_signature()),
    }


def _chrf_stats(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sentence chrF sufficient statistics [N, K] (their column sums give corpus chrF)."""
    chrf, _ = _metrics()
    stats = chrf._extract_corpus_statistics(list(hypotheses), [list(references)])
    return np.asarray(stats, dtype=np.float64)


def _chrf_from(stats: np.ndarray) -> np.ndarray:
    """Corpus chrF (0-100) of summed statistics [..., K]."""
    chrf, _ = _metrics()
    flat = stats.reshape(-1, stats.shape[-1])
    return np.array([chrf._compute_score_from_stats(row.tolist()).score for row in flat]).reshape(stats.shape[:-1])


def paired_bootstrap(
    systems: Mapping[str, Sequence[str]],
    references: Sequence[str],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    best: str | None = None,
) -> dict[str, dict[str, float]]:
    """chrF of each system with its 95 % interval over `samples` resamplings of the test sentences,
    the same resamplings for every system (paired), and `p_vs_best`: the share of them in which the
    system scores at least as high as the best one (the paired-bootstrap p-value of "it is worse";
    1.0 for the best itself). `best` defaults to the system with the highest chrF."""
    stats = {name: _chrf_stats(h, references) for name, h in systems.items()}
    n = len(references)
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))  # [S, N]
    resampled = {name: _chrf_from(st[idx].sum(axis=1)) for name, st in stats.items()}  # name -> [S]
    point = {name: float(_chrf_from(st.sum(axis=0))) for name, st in stats.items()}
    best = best if best is not None else max(point, key=point.__getitem__)
    out = {}
    for name, scores in resampled.items():
        lo, hi = np.percentile(scores, [2.5, 97.5])
        out[name] = {
            "chrf": round(point[name], 2),
            "low": round(float(lo), 2),
            "high": round(float(hi), 2),
            "p_vs_best": 1.0 if name == best else float((scores >= resampled[best]).mean()),
        }
    return out


def by_length(hypotheses: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> list[dict[str, Any]]:
    """chrF per source-length bin (LENGTH_BINS, characters): Bahdanau et al.'s quality-by-length."""
    chrf, _ = _metrics()
    out = []
    for lo, hi in LENGTH_BINS:
        rows = [i for i, s in enumerate(sources) if lo <= len(s) <= hi]
        if not rows:
            continue
        score = chrf.corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score
        out.append({"chars": f"{lo}-{hi}", "n": len(rows), "chrf": round(score, 2)})
    return out


def compare(
    systems: Mapping[str, Sequence[str]],
    baselines: Mapping[str, Sequence[str]],
    sources: Sequence[str],
    references: Sequence[str],
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, dict[str, Any]]:
    """The figures that set translation systems side by side on one held-out set: each model's and
    each baseline's chrF with its paired-bootstrap 95 % interval and p-value against the best model
    (baselines resampled with the models), BLEU, and chrF by source length. Keyed by name."""
    every = {**systems, **baselines}
    point = {name: corpus_scores(h, references) for name, h in every.items()}
    best = max(systems, key=lambda name: point[name]["chrf"]) if systems else None
    boot = paired_bootstrap(every, references, samples, best=best)
    return {
        name: {
            "chrf": boot[name]["chrf"],
            "chrf_ci95": [boot[name]["low"], boot[name]["high"]],
            "p_vs_best": boot[name]["p_vs_best"],
            "best": best,
            "bleu": point[name]["bleu"],
            "by_length": by_length(hypotheses, sources, references),
        }
        for name, hypotheses in every.items()
    }
