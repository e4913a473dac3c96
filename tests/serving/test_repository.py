"""ModelRepository over a tiny repository of fake models served by the numpy backend (tests/helpers/fakes.py):
loading, the config/graph signature check, version policies, unload and reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.config import CONFIG_FILE
from runtime.errors import InvalidInput, ModelLoadError, ModelNotFound, ModelUnavailable
from runtime.pipelines.base import bytes_tensor
from runtime.pipelines.classify import ClassifyPipeline
from runtime.pipelines.sort import SortPipeline
from runtime.pipelines.translate import TranslatePipeline
from serving.repository import ModelRepository, State, check_name
from tests.helpers.fakes import FAKES, BackendPool, copy_gru, write_model, write_repository


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "repository")


@pytest.fixture
def pool() -> BackendPool:
    return BackendPool()


@pytest.fixture
def repository(root: Path, pool: BackendPool) -> ModelRepository:
    return ModelRepository(root, pool)


def edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    """Edit config.yaml by hand, as an operator would (no validation on the way)."""
    path = folder / CONFIG_FILE
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def translate(repository: ModelRepository, name: str = "copy-gru", version: str = "") -> str:
    model = repository.get(name, version)
    _, runners = model.runners(None)
    return model.pipeline.run({"text": bytes_tensor(["abc"])}, {}, runners)["text"][0].decode()


def test_every_fake_loads_and_serves(repository: ModelRepository):
    assert repository.available() == sorted(FAKES)
    repository.load_all()
    assert [(e.name, e.state, e.reason) for e in repository.index()] == [(n, State.READY, "") for n in sorted(FAKES)]
    pipelines = {"copy-gru": TranslatePipeline, "copy-transformer": TranslatePipeline}
    pipelines |= {"sorter": SortPipeline, "keywords": ClassifyPipeline}
    for name, cls in pipelines.items():
        model = repository.get(name)
        assert model.version == 1 and isinstance(model.pipeline, cls)
        assert model.default_backend == "numpy"
        assert sorted(model.backends["numpy"]) == sorted(FAKES[name]().config.components)
    assert translate(repository, "copy-transformer") == "ABC"
    assert repository.get("keywords").describe() == {"numpy": {"backend": "numpy", "component": "classify"}}


def test_backends_load_the_files_config_yaml_names(root: Path, repository: ModelRepository):
    version = root / "copy-gru" / "1"
    (version / "encoder.fake.json").rename(version / "graph-a.json")
    edit_config(root / "copy-gru", lambda raw: raw["components"]["encoder"].update(file="graph-a.json"))
    repository.load("copy-gru")
    assert translate(repository) == "ABC"


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("missing.json", "artifact file 'missing.json' does not exist in the model's version folder"),
        ("../../sorter/1/encoder.fake.json", "resolves outside the model's version folder"),
    ],
)
def test_a_component_file_that_is_not_in_the_version_folder_is_refused(
    root: Path, repository: ModelRepository, file: str, message: str
):
    edit_config(root / "copy-gru", lambda raw: raw["components"]["encoder"].update(file=file))
    with pytest.raises(ModelLoadError, match=message):
        repository.load("copy-gru")


def break_logits_dtype(raw: dict) -> None:
    raw["components"]["decoder_step"]["outputs"][0]["dtype"] = "float16"


def rename_input(raw: dict) -> None:
    raw["components"]["encoder"]["inputs"][0]["name"] = "source_ids"


def widen_logits(raw: dict) -> None:
    raw["components"]["decoder_step"]["outputs"][0]["axes"][1] = 99


@pytest.mark.parametrize(
    ("break_config", "component", "problems"),
    [
        (break_logits_dtype, "decoder_step", ["output 'logits' is float32 in the graph, declared float16"]),
        (widen_logits, "decoder_step", ["output 'logits' axis 1 is 44 in the graph, declared 99"]),
        (
            rename_input,
            "encoder",
            [
                "input 'source_ids' is declared but the graph has none (it has ['src_ids', 'src_mask'])",
                "the graph takes input(s) ['src_ids'] that config.yaml does not declare",
            ],
        ),
    ],
)
def test_a_hand_broken_config_is_refused_naming_component_and_tensor(
    root: Path,
    repository: ModelRepository,
    pool: BackendPool,
    break_config: Callable[[dict], None],
    component: str,
    problems: list[str],
):
    edit_config(root / "copy-gru", break_config)
    with pytest.raises(ModelLoadError) as err:
        repository.load("copy-gru")
    assert err.value.message == (
        f"model 'copy-gru' component '{component}' on backend 'numpy' does not match config.yaml: {'; '.join(problems)}"
    )
    entry = repository.entry("copy-gru")
    assert entry is not None and entry.state is State.UNAVAILABLE and entry.reason == err.value.message
    with pytest.raises(ModelUnavailable, match="model 'copy-gru' is not ready: model 'copy-gru' component"):
        repository.get("copy-gru")
    assert pool.loaded and all(b.closed for b in pool.loaded)  # what loaded before the mismatch is released


def test_a_broken_model_does_not_stop_the_others(root: Path, repository: ModelRepository):
    edit_config(root / "sorter", break_logits_dtype)
    repository.load_all()
    states = {e.name: e.state for e in repository.index()}
    assert states == {"copy-gru": State.READY, "copy-transformer": State.READY, "keywords": State.READY,
                      "sorter": State.UNAVAILABLE}  # fmt: skip


def test_every_folder_is_listed_and_what_cannot_load_says_why_once(
    root: Path, repository: ModelRepository, caplog: pytest.LogCaptureFixture
):
    (root / "notes" / "1").mkdir(parents=True)  # neither config.yaml nor a graph
    (root / "half" / "1").mkdir(parents=True)
    (root / "half" / CONFIG_FILE).write_text("max_batch_size: 8\n")  # a partial config, no graph
    (root / "my model").mkdir()  # a name no model may have
    (root / ".cache").mkdir()  # hidden: not a model
    (root / "README").write_text("not a folder")
    with caplog.at_level("ERROR", logger="serving.repository"):
        failed = repository.load_all()
    assert failed == {
        "notes": "model 'notes' has no config.yaml and no <version>/model.onnx to complete it from",
        "half": "model 'half' has a config.yaml that lists no components and no <version>/model.onnx "
        "to complete it from",
    }
    index = {e.name: (e.state, e.reason) for e in repository.index()}
    assert sorted(index) == ["copy-gru", "copy-transformer", "half", "keywords", "my model", "notes", "sorter"]
    assert index["notes"] == (State.UNAVAILABLE, failed["notes"])
    assert index["my model"][0] is State.UNAVAILABLE and "not a model name" in index["my model"][1]
    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if "notes" in m] == [f"model notes failed to load: {failed['notes']}"]
    assert len([m for m in said if "my model" in m]) == 1


@pytest.mark.parametrize(
    ("policy", "served"),
    [(None, [3]), ({"latest": 2}, [2, 3]), ({"latest": 5}, [1, 2, 3]), ({"specific": [1, 3]}, [1, 3])],
)
def test_version_policy(tmp_path: Path, pool: BackendPool, policy: dict | None, served: list[int]):
    changes = {"version_policy": policy} if policy else {}
    write_model(tmp_path, copy_gru(), versions=(1, 2, 3), **changes)
    repository = ModelRepository(tmp_path, pool)
    repository.load("copy-gru")
    assert sorted(repository.entry("copy-gru").versions) == served
    assert repository.get("copy-gru").version == served[-1]  # no version asked: the latest served
    for version in served:
        assert repository.get("copy-gru", str(version)).version == version
    for version in sorted({1, 2, 3} - set(served)):
        with pytest.raises(ModelNotFound) as err:
            repository.get("copy-gru", str(version))
        assert err.value.message == f"model 'copy-gru' has no version '{version}'; serving {served}"


def test_version_policy_errors(tmp_path: Path, pool: BackendPool):
    write_model(tmp_path, copy_gru(), versions=(1, 2), version_policy={"specific": [2, 4]})
    repository = ModelRepository(tmp_path, pool)
    with pytest.raises(ModelLoadError, match=r"model 'copy-gru': versions \[4\] asked for but not found"):
        repository.load("copy-gru")
    (tmp_path / "sorter").mkdir()
    (tmp_path / "sorter" / CONFIG_FILE).write_text((tmp_path / "copy-gru" / CONFIG_FILE).read_text())
    edit_config(tmp_path / "sorter", lambda raw: raw.update(name="sorter", version_policy={"latest": 1}))
    with pytest.raises(ModelLoadError, match=r"model 'sorter' has no numeric version folder$"):  # no host path
        repository.load("sorter")
    for bad in ("x", "-1", "1.0", " 1", "²", "١"):  # the last two: str.isdigit() says yes
        repository.load("copy-gru", override={"version_policy": {"latest": 1}})
        with pytest.raises(ModelNotFound, match=f"model 'copy-gru' has no version '{bad}'"):
            repository.get("copy-gru", bad)


def test_only_ascii_digit_folders_are_versions(tmp_path: Path, pool: BackendPool):
    folder = write_model(tmp_path, copy_gru(), versions=(1,))
    (folder / "²").mkdir()  # int() refuses it
    (folder / "٣").mkdir()  # int() reads it as 3
    repository = ModelRepository(tmp_path, pool)
    repository.load("copy-gru")
    assert sorted(repository.entry("copy-gru").versions) == [1]


def test_unload_then_reload(repository: ModelRepository, pool: BackendPool):
    repository.load("copy-gru")
    first = list(pool.loaded)
    repository.unload("copy-gru")
    assert all(b.closed for b in first)
    entry = repository.entry("copy-gru")
    assert entry.state is State.UNAVAILABLE and entry.reason == "unloaded"
    with pytest.raises(ModelUnavailable, match="model 'copy-gru' is not ready: unloaded"):
        repository.get("copy-gru")
    with pytest.raises(ModelNotFound, match="model 'copy-gru' is not loaded"):
        repository.unload("copy-gru")
    repository.load("copy-gru")
    assert repository.entry("copy-gru").state is State.READY
    assert translate(repository) == "ABC"
    assert not any(b.closed for b in pool.loaded[len(first) :])


def test_reload_swaps_in_a_new_instance_and_releases_the_old_one(repository: ModelRepository, pool: BackendPool):
    repository.load("copy-gru")
    old = repository.get("copy-gru")
    old_backends = list(pool.loaded)
    repository.load("copy-gru", override={"max_batch_size": 2, "max_output_length": 2})
    new = repository.get("copy-gru")
    assert new is not old and new.config.max_batch_size == 2 and old.config.max_batch_size == 8
    assert all(b.closed for b in old_backends)
    assert translate(repository) == "AB"  # the new config's limit
    # an in-flight request holds the old instance: its pipeline still runs (the fakes run after close)
    _, runners = old.runners(None)
    assert old.pipeline.run({"text": bytes_tensor(["abc"])}, {}, runners)["text"].tolist() == [b"ABC"]


def test_a_failed_reload_keeps_the_serving_version(root: Path, repository: ModelRepository):
    repository.load("copy-gru")
    serving = repository.get("copy-gru")
    edit_config(root / "copy-gru", break_logits_dtype)
    with pytest.raises(ModelLoadError, match=r"does not match config\.yaml"):
        repository.load("copy-gru")
    entry = repository.entry("copy-gru")
    assert entry.state is State.READY and repository.get("copy-gru") is serving
    assert translate(repository) == "ABC"


def test_names_and_missing_models(root: Path, repository: ModelRepository):
    for bad in ("../etc", "", "a b", "-x", "x" * 129, "copy-gru\n"):
        with pytest.raises(InvalidInput, match="invalid model name"):
            check_name(bad)
        with pytest.raises(InvalidInput):
            repository.get(bad)
    with pytest.raises(ModelNotFound, match=r"^no model 'nope' in the repository$"):  # no host path
        repository.load("nope")
    with pytest.raises(ModelNotFound, match="unknown model 'nope'; ask RepositoryIndex for the list"):
        repository.get("nope")
    with pytest.raises(ModelUnavailable, match="model 'sorter' is in the repository but not loaded"):
        repository.get("sorter")
    assert next((e.name, e.reason) for e in repository.index()) == ("copy-gru", "not loaded")


def test_config_name_must_match_the_folder(root: Path, repository: ModelRepository):
    edit_config(root / "sorter", lambda raw: raw.update(name="other"))
    with pytest.raises(ModelLoadError, match=r"config\.yaml of folder 'sorter' names the model 'other'"):
        repository.load("sorter")


def test_an_invalid_config_leaves_the_model_unavailable_with_the_reason(root: Path, repository: ModelRepository):
    edit_config(root / "sorter", lambda raw: raw.update(max_batch_size=0))
    with pytest.raises(ModelLoadError, match="model 'sorter': ValidationError"):
        repository.load("sorter")
    entry = repository.entry("sorter")
    assert entry.state is State.UNAVAILABLE and "max_batch_size" in entry.reason


def test_backend_and_device_overrides(root: Path, pool: BackendPool):
    write_model(root, copy_gru(), backends=[{"name": "numpy"}, {"name": "numpy-twin"}])
    twin_first = ModelRepository(root, pool, backend_override="numpy-twin")
    twin_first.load("copy-gru")
    model = twin_first.get("copy-gru")
    assert model.default_backend == "numpy-twin" and sorted(model.backends) == ["numpy", "numpy-twin"]
    with pytest.raises(ModelLoadError, match=r"model 'sorter' has no backend 'numpy-twin' \(configured: \['numpy'\]\)"):
        twin_first.load("sorter")
    on_cuda = ModelRepository(root, pool, device_override="cuda")
    with pytest.raises(ModelLoadError, match="the numpy backend runs on cpu only, not cuda"):
        on_cuda.load("copy-gru")


def test_an_unknown_backend_and_bad_backend_options_are_refused(root: Path, repository: ModelRepository):
    write_model(root, copy_gru(), backends=[{"name": "tensorrt"}])
    with pytest.raises(InvalidInput, match="unknown backend 'tensorrt'; installed: numpy, numpy-twin"):
        repository.load("copy-gru")
    write_model(root, copy_gru(), backends=[{"name": "numpy", "options": {"threads": 2}}])
    with pytest.raises(ModelLoadError, match="threads"):
        repository.load("copy-gru")


def test_every_backend_of_a_model_is_loaded_and_checked(root: Path, repository: ModelRepository):
    write_model(root, copy_gru(), backends=[{"name": "numpy"}, {"name": "numpy-twin"}])
    repository.load("copy-gru")
    model = repository.get("copy-gru")
    for backend in ("numpy", "numpy-twin"):
        name, runners = model.runners(backend)
        assert name == backend and sorted(runners) == ["decoder_step", "encoder"]
        out = model.pipeline.run({"text": bytes_tensor(["hi"])}, {}, runners)
        np.testing.assert_array_equal(out["text"], np.array([b"HI"], dtype=object))
    with pytest.raises(InvalidInput) as err:
        model.runners("onnx")
    assert err.value.message == "unknown backend 'onnx' for model 'copy-gru'; it runs on ['numpy', 'numpy-twin']"
