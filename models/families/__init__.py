"""Model families: each connects a data task to a model for training, evaluation and plots."""

from __future__ import annotations

from models.families.base import Family, get_family

__all__ = ["Family", "get_family"]
