"""The closed set of attention variants, readable without torch.

`models.attention` registers one class per name (torch-side); a test keeps this list equal to
that registry. Metrics label a model by its variant only when it is one of these, so no config
(a custom model's, or a client's override) can create label values.
"""

from __future__ import annotations

ATTENTION_VARIANTS: frozenset[str] = frozenset(
    {"concat", "additive", "bilinear", "dot", "scaled-dot", "location", "local-p", "hard", "multihead"}
)
OTHER = "other"  # the label of any attention outside the registry (e.g. a custom model's own)
# the attention of a graph attnserve did not build (task tensors), unless its config names a variant
EXTERNAL = "external"


def attention_label(attention: str) -> str:
    """The metrics label of a config's `attention`: the variant's name, "external", or "other"."""
    return attention if attention in ATTENTION_VARIANTS or attention == EXTERNAL else OTHER
