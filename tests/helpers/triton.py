"""Inputs for tritonclient, the client many users already have."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as tc

DATES = ["Freitag, 2. September 1983", "14 de març 2003", "perjantai 7. kesäkuuta 1957"]


def text_input(texts: list[str]) -> tc.InferInput:
    """A BYTES input named "text" of shape [len(texts)]."""
    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return inp
