"""runtime.registry: named plugins through entry-point groups, and what it says when one is missing."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from runtime import registry
from runtime.errors import InvalidInput, ModelLoadError, PluginLoadError, UnknownPlugin
from runtime.pipelines.base import Pipeline
from runtime.pipelines.factory import pipelines
from runtime.registry import (
    ATTENTION_GROUP,
    BACKEND_GROUP,
    EXPORT_SPEC_GROUP,
    FAMILY_GROUP,
    OWN_DISTRIBUTION,
    PIPELINE_GROUP,
    Registry,
    subclass_of,
)

GROUP = "attnserve.test-plugins"


class Base:
    pass


class Good(Base):
    pass


def _with(monkeypatch, *pairs: tuple[str, str]) -> Registry[type[Base]]:
    eps = [EntryPoint(n, v, GROUP) for n, v in pairs]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == GROUP else [])
    monkeypatch.setattr(registry, "_from_source", lambda group: [])
    return Registry(GROUP, "widget", subclass_of(Base))


def test_attnserve_registers_its_own_in_every_group():
    own = {g: Registry(g, g).names(OWN_DISTRIBUTION) for g in (ATTENTION_GROUP, FAMILY_GROUP, EXPORT_SPEC_GROUP)}
    assert {"additive", "multihead"} <= set(own[ATTENTION_GROUP])
    assert {"seq2seq", "transformer", "pointer", "han", "seq2seq/dates-in-text"} <= set(own[FAMILY_GROUP])
    assert set(own[EXPORT_SPEC_GROUP]) == {"seq2seq", "transformer", "pointer", "han"}
    assert {"translate", "sort", "classify"} <= set(Registry(PIPELINE_GROUP, "task").names(OWN_DISTRIBUTION))
    assert {"onnxruntime", "torch"} <= set(Registry(BACKEND_GROUP, "backend").names(OWN_DISTRIBUTION))
    assert all(issubclass(pipelines().load(t), Pipeline) for t in pipelines().names())


def test_a_name_loads_its_class_and_is_found_without_importing(monkeypatch):
    reg = _with(monkeypatch, ("good", f"{__name__}:Good"), ("gone", "no_such_module_xyz:Thing"))
    assert reg.names() == ["gone", "good"]  # listing imports nothing, so the broken one is listed
    assert reg.load("good") is Good


def test_an_unknown_name_lists_the_known_ones(monkeypatch):
    reg = _with(monkeypatch, ("good", f"{__name__}:Good"))
    with pytest.raises(UnknownPlugin, match=r"unknown widget 'nope'; known: \['good'\]") as err:
        reg.load("nope")
    assert isinstance(err.value, InvalidInput) and isinstance(err.value, ValueError)


def test_an_unknown_name_names_the_package_that_provided_it(monkeypatch):
    reg = _with(monkeypatch, ("good", f"{__name__}:Good"))
    with pytest.raises(UnknownPlugin, match=r"widget 'cos' comes from the package 'my-attn', which is not installed"):
        reg.load("cos", package="my-attn")


def test_an_install_older_than_the_source_reads_the_source(monkeypatch):
    """An editable install made before a group existed lists none of attnserve's own: the source
    tree's pyproject.toml has them; without it, the message says to reinstall."""
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    assert pipelines().load("translate").__name__ == "TranslatePipeline"
    monkeypatch.setattr(registry, "_from_source", lambda group: [])
    with pytest.raises(UnknownPlugin, match=r"registers nothing in 'attnserve.pipelines'.*pip install --no-deps -e"):
        pipelines().load("translate")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no_such_module_xyz:Thing", r"cannot be imported: no module named 'no_such_module_xyz'"),
        (f"{__name__}:Missing", "failed to import"),
        (f"{__name__}:Base.mro", "not a subclass of"),
        ("builtins:dict", "not a subclass of tests.runtime.test_registry.Base"),
    ],
)
def test_a_broken_entry_point_is_a_load_error(monkeypatch, value: str, message: str):
    reg = _with(monkeypatch, ("bad", value))
    with pytest.raises(PluginLoadError, match=message) as err:
        reg.load("bad")
    assert isinstance(err.value, ModelLoadError)


def test_a_name_registered_twice_is_refused(monkeypatch):
    reg = _with(monkeypatch, ("w", f"{__name__}:Good"), ("w", f"{__name__}:Good"), ("x", f"{__name__}:Good"))
    assert reg.load("w") is Good  # one distribution seen twice on the path
    reg = _with(monkeypatch, ("w", f"{__name__}:Good"), ("w", "a:B"))
    with pytest.raises(PluginLoadError, match="registered more than once"):
        reg.load("w")


def test_a_reference_loads_as_an_entry_point_would():
    reg: Registry[type[Base]] = Registry(GROUP, "widget", subclass_of(Base))
    assert reg.load_reference(f"{__name__}:Good") is Good
    with pytest.raises(UnknownPlugin, match="not of the form"):
        reg.load_reference("just_a_module")
    with pytest.raises(PluginLoadError, match=r"no module named 'absent_pkg_xyz'; install the package 'absent-pkg'"):
        reg.load_reference("absent_pkg_xyz.spec:Spec", package="absent-pkg")
