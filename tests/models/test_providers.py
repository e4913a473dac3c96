"""Checkpoints and export specs name the package a model needs (fast: no reference repository)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models import checkpoint
from models.components.builtin import PointerSpec
from models.components.spec import get_spec
from models.recipes import RECIPES
from runtime.errors import PluginLoadError, UnknownPlugin

ROOT = Path(__file__).resolve().parents[2]


def test_attnserves_own_recipes_need_no_package():
    assert all(checkpoint.providers(recipe) == {} for recipe in RECIPES.values())
    saved = json.loads((ROOT / "checkpoints" / "sort-pointer" / checkpoint.CONFIG).read_text())
    assert "packages" not in saved


def test_a_checkpoint_whose_package_is_missing_names_it(tmp_path: Path):
    ck = tmp_path / "sort-mine"
    shutil.copytree(ROOT / "checkpoints" / "sort-pointer", ck)
    config = json.loads((ck / checkpoint.CONFIG).read_text())
    config |= {"family": "my-pointer", "packages": {"family": "my-attention-models"}}
    (ck / checkpoint.CONFIG).write_text(json.dumps(config))
    with pytest.raises(UnknownPlugin, match=r"family 'my-pointer' comes from the package 'my-attention-models'"):
        checkpoint.load(ck)
    config |= {"family": "pointer", "attention": "cosine", "packages": {"attention": "my-attention-models"}}
    (ck / checkpoint.CONFIG).write_text(json.dumps(config))
    with pytest.raises(UnknownPlugin, match=r"attention 'cosine' comes from the package 'my-attention-models'"):
        checkpoint.load(ck)


def test_an_export_spec_by_reference():
    assert get_spec("pointer") is PointerSpec
    assert get_spec("pointer", "models.components.builtin:PointerSpec") is PointerSpec
    with pytest.raises(ValueError, match="is for the family 'pointer', not 'han'"):
        get_spec("han", "models.components.builtin:PointerSpec")
    with pytest.raises(PluginLoadError, match=r"not a subclass of models\.components\.spec\.ExportSpec"):
        get_spec("pointer", "models.components.builtin:Method")
    with pytest.raises(PluginLoadError, match=r"no module named 'my_models'; install the package 'my-models'"):
        get_spec("mine", "my_models.spec:MySpec", package="my-models")
