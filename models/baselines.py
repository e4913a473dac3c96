"""Non-neural reference scores for the data tasks."""

from __future__ import annotations

from collections.abc import Sequence

from models.data.debian import Doc


def tfidf_logreg_accuracy(train: Sequence[Doc], test: Sequence[Doc], seed: int = 0) -> float:
    """Held-out accuracy of TF-IDF (word 1–2-grams) + logistic regression.

    Each doc is the space-joined `sentences` (short description included).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if not train or not test:
        raise ValueError("train and test must both be non-empty")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform([" ".join(d.sentences) for d in train])
    x_test = vectorizer.transform([" ".join(d.sentences) for d in test])
    model = LogisticRegression(C=10.0, max_iter=2000, random_state=seed)
    model.fit(x_train, [d.label for d in train])
    predicted = model.predict(x_test)
    return float(sum(p == d.label for p, d in zip(predicted, test, strict=True)) / len(test))


def copy_source(test: Sequence[tuple[str, str]]) -> list[str]:
    """The copy baseline's translations: each source unchanged (names, commands and acronyms of
    package descriptions often stay as they are)."""
    return [src for src, _ in test]


def nearest_neighbour(train: Sequence[tuple[str, str]], test: Sequence[tuple[str, str]]) -> list[str]:
    """The retrieval baseline's translations: the translation of the training source closest to
    each test source (cosine of character 1-4-gram TF-IDF within word boundaries; ties to the
    first in training order)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not train:
        raise ValueError("train must be non-empty")
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True)
    x_train = vectorizer.fit_transform([src for src, _ in train])  # [N, F] L2-normalised rows
    out: list[str] = []
    for i in range(0, len(test), 512):
        x_test = vectorizer.transform([src for src, _ in test[i : i + 512]])  # [b, F]
        best = (x_test @ x_train.T).toarray().argmax(axis=1)  # [b]: first maximum
        out.extend(train[int(j)][1] for j in best)
    return out
