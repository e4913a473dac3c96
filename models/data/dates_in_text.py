"""`dates-in-text`: the `dates` task with the date inside a sentence of 40-120 characters.

"Rechnung 48213; vom Freitag, 2. September 1983; Betrag 612,40 EUR; seit 1975" -> "1983-09-02".
The date is rendered exactly as in `dates` (models.data.dates.render: the same locales, styles and
lowercase share) and put among two to four distractor clauses of its language, in random order:
invoice and order numbers, amounts, times, another year, reference codes. The date is the only one
in the sentence; the distractor year differs from its year. Languages without clauses of their own
here use the English ones (their dates stay in their own language).

No leakage of templates x dates between train and held-out: the held-out dates (one day in five,
by its ordinal) never appear in a training sentence, so no held-out sentence, nor its date in any
wording, was trained on; the clause wordings are shared, as a deployed model meets known phrasings
around new values. (A first version held out every third wording of each list instead: scaled-dot
scored 0.74, 513 of its 517 misses a distractor year read as the date's after the unseen "founded
{year}": the model had learnt the trained year wordings, not what a distractor year is.)
Deterministic under a seed for the pinned babel version.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from models.data.dates import FIRST, LAST, LOCALES, LOWERCASE_SHARE, STYLES, render

MIN_CHARS, MAX_CHARS = 40, 120
HELD_OUT_EVERY = 5  # a day is held out when its ordinal is a multiple of 5

# A sentence is the date's clause and two to four distractor clauses, in random order. Fields:
# {date} the target; {n} a 3-6 digit number, {amount} a money amount, {time} a clock time,
# {year} a year other than the date's, {code} a reference code. Every kind of distractor, a
# year included, can stand before or after the date.
CLAUSES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "date": ("dated {date}", "shipped on {date}", "last visit {date}", "due {date}", "signed {date}",
                 "moved to {date}", "issued {date}", "paid on {date}", "opened {date}"),
        "other": ("invoice {n}", "since {year}", "amount {amount}", "at {time}", "ref {code}", "order {n}",
                  "the {year} report", "total {amount}", "room {n}", "window {time}", "client {code}",
                  "founded {year}"),
    },
    "de": {
        "date": ("vom {date}", "geliefert am {date}", "Termin {date}", "fällig am {date}", "unterschrieben {date}",
                 "verschoben auf {date}"),
        "other": ("Rechnung {n}", "seit {year}", "Betrag {amount}", "um {time} Uhr", "Zeichen {code}",
                  "Auftrag {n}", "Bericht {year}", "Summe {amount}", "Raum {n}"),
    },
    "fr": {
        "date": ("du {date}", "expédiée le {date}", "rendez-vous le {date}", "échéance {date}", "signé le {date}",
                 "reporté au {date}"),
        "other": ("facture {n}", "depuis {year}", "montant {amount}", "à {time}", "référence {code}",
                  "commande {n}", "rapport {year}", "total {amount}", "salle {n}"),
    },
    "es": {
        "date": ("con fecha {date}", "enviado el {date}", "cita el {date}", "vence el {date}", "firmado el {date}",
                 "trasladada al {date}"),
        "other": ("factura {n}", "desde {year}", "importe {amount}", "a las {time}", "referencia {code}",
                  "pedido {n}", "informe de {year}", "total {amount}", "sala {n}"),
    },
    "it": {
        "date": ("del {date}", "spedito il {date}", "appuntamento il {date}", "scadenza {date}", "firmato il {date}",
                 "spostata al {date}"),
        "other": ("fattura {n}", "dal {year}", "importo {amount}", "alle {time}", "riferimento {code}",
                  "ordine {n}", "rapporto {year}", "totale {amount}", "sala {n}"),
    },
    "nl": {
        "date": ("van {date}", "verzonden op {date}", "afspraak op {date}", "vervalt op {date}",
                 "getekend op {date}", "verplaatst naar {date}"),
        "other": ("factuur {n}", "sinds {year}", "bedrag {amount}", "om {time}", "kenmerk {code}",
                  "bestelling {n}", "verslag {year}", "totaal {amount}", "zaal {n}"),
    },
    "pt": {
        "date": ("de {date}", "enviada em {date}", "reunião em {date}", "vence em {date}", "assinado em {date}",
                 "adiada para {date}"),
        "other": ("fatura {n}", "desde {year}", "valor {amount}", "às {time}", "referência {code}",
                  "encomenda {n}", "relatório de {year}", "total {amount}", "sala {n}"),
    },
}  # fmt: skip
SEPARATORS = (", ", "; ", " - ", ", ")
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN", "€", "$")


def language(locale: str) -> str:
    """The clause set of a locale: its language's, else English's."""
    lang = locale.split("_")[0]
    return lang if lang in CLAUSES else "en"


def wordings(locale: str, kind: str) -> tuple[str, ...]:
    """The wordings of a locale's language for the date clause ("date") or the distractors ("other")."""
    return CLAUSES[language(locale)][kind]


def is_held_out(day: dt.date) -> bool:
    """Whether `day` belongs to the held-out dates (never in a training sentence)."""
    return day.toordinal() % HELD_OUT_EVERY == 0


def _distractor(wording: str, year: int, rng: random.Random) -> str:
    """A distractor clause with fresh fields; its year (if any) differs from the date's `year`."""
    other = rng.choice([y for y in range(FIRST.year, LAST.year + 1) if y != year])
    code = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2)) + f"-{rng.randint(100, 9999)}"
    amount = f"{rng.randint(1, 9999)},{rng.randint(0, 99):02d} {rng.choice(CURRENCIES)}"
    return wording.format(
        n=rng.randint(100, 999_999),
        amount=amount,
        time=f"{rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}",
        year=other,
        code=code,
    )


def _sentence(locale: str, date: str, year: int, rng: random.Random) -> str:
    """The date's clause among two to four distractor clauses, in random order."""
    others = [_distractor(w, year, rng) for w in rng.sample(wordings(locale, "other"), rng.randint(2, 4))]
    clauses = [rng.choice(wordings(locale, "date")).format(date=date), *others]
    rng.shuffle(clauses)
    text = rng.choice(SEPARATORS).join(clauses)
    return text[0].upper() + text[1:]


def generate(n: int, seed: int, held_out: bool) -> list[tuple[str, str]]:
    """`n` (sentence, ISO date) pairs with distinct sentences of MIN_CHARS to MAX_CHARS characters,
    on training or held-out dates."""
    rng = random.Random(seed)
    span = (LAST - FIRST).days
    seen: dict[str, str] = {}
    while len(seen) < n:
        day = FIRST + dt.timedelta(days=rng.randint(0, span))
        if is_held_out(day) != held_out:
            continue
        locale = rng.choice(LOCALES)
        text = render(day, rng.choice(STYLES), locale)
        if text is None:
            continue
        if rng.random() < LOWERCASE_SHARE:
            text = text.lower()
        sentence = _sentence(locale, text, day.year, rng)
        if MIN_CHARS <= len(sentence) <= MAX_CHARS:
            seen.setdefault(sentence, day.isoformat())
    return list(seen.items())


def field_errors(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, int]:
    """Misses by what they got wrong: the year, the month or the day of an ISO date (a miss may
    count under several), or "malformed" when the prediction is no ISO date at all."""
    counts = {"year": 0, "month": 0, "day": 0, "malformed": 0}
    for predicted, target in zip(predictions, targets, strict=True):
        if predicted == target:
            continue
        got, want = predicted.split("-"), target.split("-")
        if len(got) != 3 or [len(g) for g in got] != [4, 2, 2] or not all(g.isdigit() for g in got):
            counts["malformed"] += 1
            continue
        for field, g, w in zip(("year", "month", "day"), got, want, strict=True):
            counts[field] += g != w
    return counts


def splits(
    seed: int = 0, n_train: int = 60_000, n_test: int = 2_000
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out pairs on disjoint dates, so no sentence (nor date) appears in both."""
    return generate(n_train, seed, held_out=False), held_out_split(seed, n_test)


def held_out_split(seed: int = 0, n_test: int = 2_000) -> list[tuple[str, str]]:
    """The held-out pairs of `splits(seed)`, without generating the training ones."""
    return generate(n_test, seed + 1, held_out=True)
