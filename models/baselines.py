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
