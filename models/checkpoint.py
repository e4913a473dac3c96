"""Checkpoints: weights.safetensors + config.json + vocab JSON + metrics.json. Never pickle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from models.attention import attentions
from models.families.base import Family, families, family_entry, get_family
from models.recipes import Recipe
from runtime.files import read_text, regular_file
from runtime.registry import OWN_DISTRIBUTION
from runtime.text import Vocab

WEIGHTS, CONFIG, METRICS = "weights.safetensors", "config.json", "metrics.json"
EXPORT_SPEC = "export_spec"  # config key: the "module:Class" an export was given (attnserve export --spec)
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded model with everything needed to use it."""

    path: Path
    config: dict[str, Any]
    recipe: Recipe
    family: Family
    model: nn.Module

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / METRICS
        return json.loads(path.read_text()) if path.exists() else {}


def save(
    out: Path,
    recipe: Recipe,
    family: Family,
    model: nn.Module,
    model_config: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS))
    vocab_files = {}
    for role, vocab in family.vocabs.items():
        vocab_files[role] = f"vocab_{role}.json"
        vocab.save(out / vocab_files[role])
    config = {
        "format_version": FORMAT_VERSION,
        "name": recipe.name,
        "task": recipe.task,
        "family": recipe.family,
        "attention": recipe.attention,
        "model": model_config,
        "vocabs": vocab_files,
        "recipe": recipe.model_dump(),
        **(extra or {}),
    }
    packages = providers(recipe)
    if packages:  # a user's package: loading names it when it is missing
        config["packages"] = packages
    (out / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def providers(recipe: Recipe) -> dict[str, str]:
    """The packages other than attnserve that register the recipe's family and attention: {"family":
    distribution, "attention": distribution}, for those that come from one."""
    found = {
        "family": families().provider(family_entry(recipe.family, recipe.task)),
        "attention": attentions().provider(recipe.attention),
    }
    return {role: dist for role, dist in found.items() if dist and dist != OWN_DISTRIBUTION}


def load(path: Path | str) -> Checkpoint:
    """Load a checkpoint folder (weights through safetensors only)."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {CONFIG})")
    # every file the checkpoint names stays inside its folder and is read with a size limit
    config = json.loads(read_text(path, CONFIG, "checkpoint config"))
    recipe = Recipe.model_validate(config["recipe"])
    vocabs = {role: Vocab.read(path, name) for role, name in config["vocabs"].items()}
    packages = config.get("packages", {})
    family = get_family(config["family"], config.get("task"), package=packages.get("family"))(recipe, vocabs)
    attentions().load(config["attention"], package=packages.get("attention"))  # names a missing package
    model = family.build_model(config["model"])
    model.load_state_dict(load_file(str(regular_file(path, WEIGHTS, "weights file"))))
    model.eval()
    return Checkpoint(path=path, config=config, recipe=recipe, family=family, model=model)
