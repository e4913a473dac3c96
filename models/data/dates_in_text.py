"""`dates-in-text`: the `dates` task with the date inside a sentence of 40-120 characters.

"Rechnung 48213 vom Freitag, 2. September 1983 über 612,40 EUR, fällig 14:30" -> "1983-09-02".
The date is rendered exactly as in `dates` (models.data.dates.render: the same locales, styles and
lowercase share) and embedded in a template of its language with distractors: invoice and order
numbers, amounts, times, other years, reference codes. The date is the only one in the sentence;
the distractor years differ from its year. Languages without templates of their own here use the
English set (their dates stay in their own language).

No leakage between train and held-out: templates are split per language into training and
held-out families (every third template of a language is held out), so no held-out sentence
shares a template with a training one, and no source string appears in both. Deterministic under
a seed for the pinned babel version.
"""

from __future__ import annotations

import datetime as dt
import random

from models.data.dates import FIRST, LAST, LOCALES, LOWERCASE_SHARE, STYLES, render

MIN_CHARS, MAX_CHARS = 40, 120
HELD_OUT_EVERY = 3  # template i of a language is held out when i % 3 == 2

# {date} is the target; {n} a 3-6 digit number, {amount} a money amount, {time} a clock time,
# {year} a year other than the date's, {code} a reference code.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "Invoice {n} dated {date}, amount due {amount}, ref {code}",
        "Order {n} was shipped on {date} at {time} from depot {code}",
        "Meeting moved to {date}, {time}, room {n}; budget {amount}",
        "Payment of {amount} received {date} for contract {code} ({year})",
        "Ticket {code}: flight {n} departs {date} at {time}",
        "The {year} report, revised on {date}, lists {n} items worth {amount}",
        "Deadline: {date}. Send form {code} with {n} copies and {amount}",
        "Delivery note {n}, {date}, driver {code}, window {time}",
        "Since {year} our client {code} paid {amount}; last visit {date}",
    ),
    "de": (
        "Rechnung {n} vom {date} über {amount}, Kundennummer {code}",
        "Lieferung {n} erfolgte am {date} um {time} Uhr, Lager {code}",
        "Termin verschoben auf {date}, {time} Uhr, Raum {n}",
        "Zahlung von {amount} eingegangen am {date}, Vertrag {code} ({year})",
        "Der Bericht {year} wurde am {date} geändert: {n} Posten, {amount}",
        "Frist: {date}. Formular {code} mit {n} Kopien und {amount} einreichen",
    ),
    "fr": (
        "Facture {n} du {date}, montant {amount}, référence {code}",
        "Commande {n} expédiée le {date} à {time}, dépôt {code}",
        "Réunion reportée au {date}, {time}, salle {n}",
        "Paiement de {amount} reçu le {date} pour le contrat {code} ({year})",
        "Le rapport {year}, révisé le {date}, compte {n} lignes pour {amount}",
        "Échéance : {date}. Envoyer le formulaire {code} en {n} exemplaires",
    ),
    "es": (
        "Factura {n} con fecha {date}, importe {amount}, referencia {code}",
        "Pedido {n} enviado el {date} a las {time}, almacén {code}",
        "Reunión trasladada al {date}, {time}, sala {n}",
        "Pago de {amount} recibido el {date} por el contrato {code} ({year})",
        "El informe de {year}, revisado el {date}, tiene {n} partidas por {amount}",
        "Plazo: {date}. Enviar el formulario {code} con {n} copias",
    ),
    "it": (
        "Fattura {n} del {date}, importo {amount}, riferimento {code}",
        "Ordine {n} spedito il {date} alle {time}, magazzino {code}",
        "Riunione spostata al {date}, ore {time}, sala {n}",
        "Pagamento di {amount} ricevuto il {date}, contratto {code} ({year})",
        "Il rapporto {year}, rivisto il {date}, elenca {n} voci per {amount}",
        "Scadenza: {date}. Inviare il modulo {code} in {n} copie",
    ),
    "nl": (
        "Factuur {n} van {date}, bedrag {amount}, kenmerk {code}",
        "Bestelling {n} verzonden op {date} om {time}, magazijn {code}",
        "Vergadering verplaatst naar {date}, {time}, zaal {n}",
        "Betaling van {amount} ontvangen op {date}, contract {code} ({year})",
        "Het verslag van {year}, herzien op {date}, telt {n} posten",
        "Uiterste datum: {date}. Stuur formulier {code} in {n} exemplaren",
    ),
    "pt": (
        "Fatura {n} de {date}, valor {amount}, referência {code}",
        "Encomenda {n} enviada em {date} às {time}, armazém {code}",
        "Reunião adiada para {date}, {time}, sala {n}",
        "Pagamento de {amount} recebido em {date}, contrato {code} ({year})",
        "O relatório de {year}, revisto em {date}, tem {n} itens",
        "Prazo: {date}. Enviar o formulário {code} com {n} cópias",
    ),
}
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN", "€", "$")


def language(locale: str) -> str:
    """The template set of a locale: its language's, else English's."""
    lang = locale.split("_")[0]
    return lang if lang in TEMPLATES else "en"


def templates(locale: str, held_out: bool) -> list[str]:
    """The training (or held-out) templates of a locale's language."""
    every = TEMPLATES[language(locale)]
    return [t for i, t in enumerate(every) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]


def _fill(template: str, date: str, year: int, rng: random.Random) -> str:
    other = rng.choice([y for y in range(FIRST.year, LAST.year + 1) if y != year])
    code = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2)) + f"-{rng.randint(100, 9999)}"
    amount = f"{rng.randint(1, 9999)},{rng.randint(0, 99):02d} {rng.choice(CURRENCIES)}"
    return template.format(
        date=date,
        n=rng.randint(100, 999_999),
        amount=amount,
        time=f"{rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}",
        year=other,
        code=code,
    )


def generate(n: int, seed: int, held_out: bool) -> list[tuple[str, str]]:
    """`n` (sentence, ISO date) pairs with distinct sentences of MIN_CHARS to MAX_CHARS characters,
    from the training or the held-out templates."""
    rng = random.Random(seed)
    span = (LAST - FIRST).days
    seen: dict[str, str] = {}
    while len(seen) < n:
        day = FIRST + dt.timedelta(days=rng.randint(0, span))
        locale = rng.choice(LOCALES)
        text = render(day, rng.choice(STYLES), locale)
        if text is None:
            continue
        if rng.random() < LOWERCASE_SHARE:
            text = text.lower()
        sentence = _fill(rng.choice(templates(locale, held_out)), text, day.year, rng)
        if MIN_CHARS <= len(sentence) <= MAX_CHARS:
            seen.setdefault(sentence, day.isoformat())
    return list(seen.items())


def splits(
    seed: int = 0, n_train: int = 60_000, n_test: int = 2_000
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out pairs: disjoint template families, so no sentence appears in both."""
    return generate(n_train, seed, held_out=False), generate(n_test, seed + 1, held_out=True)
