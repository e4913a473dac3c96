"""The closed set of attention variants, readable without torch.

attnserve's own `attnserve.attention` entry points register one class per name (torch-side); a
test keeps this list equal to them. Metrics label a model by its variant only when it is one of
these or an installed package registers it, so no config (a custom model's, or a client's
override) can create label values.
"""

from __future__ import annotations

from runtime.registry import ATTENTION_GROUP, Registry

ATTENTION_VARIANTS: frozenset[str] = frozenset(
    {"concat", "additive", "bilinear", "dot", "scaled-dot", "location", "local-p", "hard", "multihead"}
)
OTHER = "other"  # the label of any attention outside the registry (e.g. a custom model's own)
# the attention of a graph attnserve did not build (task tensors), unless its config names a variant
EXTERNAL = "external"


def attention_label(attention: str) -> str:
    """The metrics label of a config's `attention`: attnserve's variant, "external", an attention an
    installed package registers (the `attnserve.attention` entry-point group: installing is the
    operator's act, as the config is), or "other". A name outside attnserve's scans the installed
    packages: decide it once per model load, not per request."""
    if attention in ATTENTION_VARIANTS or attention == EXTERNAL:
        return attention
    return attention if attention in Registry(ATTENTION_GROUP, "attention").names() else OTHER
