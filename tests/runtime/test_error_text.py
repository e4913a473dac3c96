"""Error messages quote a client's strings cut to a bound, and never exceed MESSAGE_BYTES."""

from __future__ import annotations

from runtime.errors import MESSAGE_BYTES, SHOWN_CHARS, InvalidInput, QueueFull, bounded, shown


def test_shown_keeps_short_values_and_cuts_long_ones_saying_how_much_is_left_out():
    assert shown("beam_size") == "beam_size"
    assert shown(["text", "extra"]) == "['text', 'extra']"  # not a string: its repr
    assert shown(repr("x")) == "'x'"
    long = shown("k" * 10_000)
    assert long == "k" * SHOWN_CHARS + f"... ({10_000 - SHOWN_CHARS} more characters)"
    assert shown("é" * 30, limit=10) == "é" * 10 + "... (20 more characters)"


def test_every_serving_error_message_is_bounded_in_utf8_bytes():
    assert InvalidInput("short").message == "short"
    for text in ("k" * 10_000, "é" * 10_000, "🙂" * 10_000):
        message = InvalidInput(f"unknown parameter '{text}'").message
        assert len(message.encode()) <= MESSAGE_BYTES and message.endswith("(message cut)")
        assert message.startswith("unknown parameter '")
    assert str(QueueFull("q" * 5000)) == QueueFull("q" * 5000).message  # the exception's text is the message


def test_bounded_cuts_at_a_character_boundary():
    assert bounded("abc") == "abc"
    cut = bounded("é" * 100, limit=51)  # 2 bytes each: the cut falls inside a character
    assert len(cut.encode()) <= 51 and cut.startswith("é" * 16) and cut.endswith(" ... (message cut)")
