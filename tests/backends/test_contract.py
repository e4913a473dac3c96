"""The backend contract, checked for every installed `attnserve.backends` entry point.

Each backend loads each component of a tiny exported seq2seq model from the artifact folder
its `config.yaml` entry names; a backend the model does not list is skipped for it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.helper import tensor_dtype_to_np_dtype
from pydantic import ValidationError

from backends.base import ENTRY_POINT_GROUP, Backend, BackendOptions
from backends.loader import available_backends, get_backend
from models import checkpoint
from models.components.spec import get_spec
from runtime import registry
from runtime.config import CONFIG_FILE, Component, ModelConfig
from runtime.errors import InvalidInput, ModelLoadError
from runtime.tensors import Signature
from tests.helpers.tiny import BACKEND_FAMILY

BACKENDS = sorted(available_backends())
COMPONENTS = ["encoder", "decoder_step"]  # the seq2seq split
DIMS = [{"batch": 1, "src_len": 1}, {"batch": 3, "src_len": 9}, {"batch": 5, "src_len": 23}]
ATOL = 1e-4
CUDA_ORT = "CUDAExecutionProvider" in ort.get_available_providers()
CUDA_TORCH = torch.cuda.is_available()

backend_names = pytest.mark.parametrize("name", BACKENDS)


def C(name: str, file: str | None = None) -> Component:
    """A component to load; the server, not the backend, checks the declared signature."""
    return Component(name, file or f"{name}.onnx", Signature(inputs=(), outputs=()))


components = pytest.mark.parametrize("component", COMPONENTS)


@pytest.fixture(scope="module")
def config(model_dir: Path) -> ModelConfig:
    return ModelConfig.load(model_dir / CONFIG_FILE)


def artifact_dir(config: ModelConfig, version_dir: Path, name: str) -> Path:
    for b in config.backends:
        if b.name == name:
            return version_dir / b.artifact if b.artifact else version_dir
    pytest.skip(f"the exported model does not list backend {name!r}")


@pytest.fixture(scope="module")
def loaded(config: ModelConfig, version_dir: Path) -> Iterator[dict[tuple[str, str], Backend]]:
    """(backend, component) -> a CPU instance with default options, loaded on first use."""
    cache: dict[tuple[str, str], Backend] = {}
    yield cache
    for b in cache.values():
        b.close()


def get_loaded(cache, config, version_dir, name: str, component: str) -> Backend:
    if (name, component) not in cache:
        cls = get_backend(name)
        cache[name, component] = cls.load(artifact_dir(config, version_dir, name), C(component), "cpu", cls.Options())
    return cache[name, component]


@pytest.fixture(scope="module")
def make_feeds(version_dir: Path):
    """component, dims -> numpy feeds from the spec's own input makers (right-padded masks)."""
    ck = checkpoint.load(version_dir / "torch")
    comps = {c.spec.name: c for c in get_spec(BACKEND_FAMILY)(ck.model, ck.config["model"]).components()}

    def make(component: str, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        feeds = comps[component].make_inputs(dims, torch.Generator().manual_seed(seed))
        return {k: v.numpy() for k, v in feeds.items()}

    return make


@pytest.fixture(scope="module")
def reference(version_dir: Path):
    """component -> a plain ONNX Runtime CPU session: what every backend must reproduce."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return {
        c: ort.InferenceSession(str(version_dir / f"{c}.onnx"), opts, providers=["CPUExecutionProvider"])
        for c in COMPONENTS
    }


def run_reference(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


# --- discovery -------------------------------------------------------------------------------


def test_builtins_are_registered(config: ModelConfig):
    assert {"onnxruntime", "torch"} <= set(BACKENDS)
    assert [b.name for b in config.backends] == ["onnxruntime", "torch"]
    assert sorted(config.components) == sorted(COMPONENTS)


@backend_names
def test_entry_point_is_a_backend_with_strict_options(name: str):
    cls = get_backend(name)
    assert issubclass(cls, Backend) and cls.name == name
    assert issubclass(cls.Options, BackendOptions)
    cls.Options()  # every option has a default
    with pytest.raises(ValidationError, match="no_such_option"):
        cls.Options.model_validate({"no_such_option": 1})


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(InvalidInput, match=r"unknown backend 'nope'; known: \[.*'onnxruntime', 'torch'\]"):
        get_backend("nope")


def _only(monkeypatch, *pairs: tuple[str, str]) -> None:
    """The backends group lists exactly `pairs` (attnserve's own pyproject.toml is not read either)."""
    eps = [EntryPoint(n, v, ENTRY_POINT_GROUP) for n, v in pairs]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_from_source", lambda group: [])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("builtins:dict", "not a subclass of backends.base.Backend"),
        ("backends.base:Backend", "does not implement"),
        ("no_such_module_xyz:Thing", "cannot be imported: no module named 'no_such_module_xyz'"),
        ("backends.base:NoSuchThing", "failed to import"),
        ("backends.loader:get_backend", "not a subclass"),
    ],
)
def test_bad_entry_point_is_a_load_error(monkeypatch, value: str, message: str):
    _only(monkeypatch, ("bad", value))
    assert list(available_backends()) == ["bad"]
    with pytest.raises(ModelLoadError, match=message):
        get_backend("bad")


def test_ambiguous_entry_point_is_a_load_error(monkeypatch):
    _only(
        monkeypatch,
        ("torch", "backends.torch:TorchBackend"),
        ("torch", "backends.torch:TorchBackend"),  # the same distribution seen twice: fine
        ("onnxruntime", "backends.onnxruntime:OnnxRuntimeBackend"),
        ("onnxruntime", "other_pkg:OnnxRuntimeBackend"),
    )
    assert get_backend("torch").name == "torch"
    with pytest.raises(ModelLoadError, match="registered more than once"):
        get_backend("onnxruntime")


# --- signature and inference -------------------------------------------------------------------


@backend_names
@components
def test_signature_matches_the_onnx_graph(name, component, loaded, config, version_dir: Path):
    b = get_loaded(loaded, config, version_dir, name, component)
    graph = onnx.load(str(version_dir / f"{component}.onnx")).graph
    for declared, found in ((b.signature.inputs, graph.input), (b.signature.outputs, graph.output)):
        assert [t.name for t in declared] == [v.name for v in found]
        for t, v in zip(declared, found, strict=True):
            tt = v.type.tensor_type
            assert t.dtype == np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)).name, t.name
            assert t.rank == len(tt.shape.dim), t.name
            for axis, dim in zip(t.axes, tt.shape.dim, strict=True):
                if dim.dim_param:
                    assert isinstance(axis, str), (t.name, axis)
                else:
                    assert axis == dim.dim_value, (t.name, axis)


@backend_names
@components
@pytest.mark.parametrize("dims", DIMS, ids=lambda d: f"b{d['batch']}s{d['src_len']}")
def test_infer_reproduces_the_onnx_graph(name, component, dims, loaded, config, version_dir, make_feeds, reference):
    b = get_loaded(loaded, config, version_dir, name, component)
    feeds = make_feeds(component, dims)
    got = b.infer(feeds)
    want = run_reference(reference[component], feeds)
    assert list(got) == [t.name for t in b.signature.outputs] == list(want)
    for out, expected in want.items():
        assert isinstance(got[out], np.ndarray)
        assert got[out].shape == expected.shape and got[out].dtype == expected.dtype, out
        assert np.abs(got[out] - expected).max() <= ATOL, out


@components
def test_onnxruntime_and_torch_agree(component, loaded, config, version_dir, make_feeds):
    if not {"onnxruntime", "torch"} <= set(BACKENDS):
        pytest.skip("needs both built-in backends")
    ort_b = get_loaded(loaded, config, version_dir, "onnxruntime", component)
    torch_b = get_loaded(loaded, config, version_dir, "torch", component)
    for seed, dims in enumerate(DIMS):
        feeds = make_feeds(component, dims, seed=10 + seed)
        a, b = ort_b.infer(feeds), torch_b.infer(feeds)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].shape == b[k].shape
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=ATOL, err_msg=k)


@backend_names
@components
def test_extra_feeds_are_ignored_and_read_only_arrays_accepted(
    name, component, loaded, config, version_dir, make_feeds
):
    b = get_loaded(loaded, config, version_dir, name, component)
    feeds = make_feeds(component, DIMS[1])
    expected = b.infer(feeds)
    frozen = {}
    for k, v in feeds.items():  # as np.frombuffer gives them from a request
        v = v.copy()
        v.flags.writeable = False
        frozen[k] = v
    got = b.infer({**frozen, "unused_extra": np.zeros(3, np.float32)})
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def _bad_cases(component: str, feeds: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    first = next(iter(feeds))
    rest = {k: v for k, v in feeds.items() if k != first}
    cases: dict[str, dict[str, object]] = {
        "wrong_dtype": {**feeds, first: feeds[first].astype(np.int32)},
        "float_mask": {**feeds, "src_mask": feeds["src_mask"].astype(np.float32)},
        "missing_input": rest,
        "extra_rank": {**feeds, first: feeds[first][None]},
        "missing_rank": {**feeds, "src_mask": feeds["src_mask"][0]},
        "batch_mismatch": {**feeds, "src_mask": feeds["src_mask"][:1]},
        "src_len_mismatch": {**feeds, "src_mask": feeds["src_mask"][:, :-1]},
        "not_an_array": {**feeds, first: feeds[first].tolist()},
    }
    if component == "encoder":
        cases["id_out_of_vocabulary"] = {**feeds, "src_ids": np.full_like(feeds["src_ids"], 10**9)}
    else:
        cases["fixed_axis_wrong"] = {**feeds, "state": np.zeros((feeds["state"].shape[0], 3), np.float32)}
    return cases


COMMON_BAD = [
    "wrong_dtype", "float_mask", "missing_input", "extra_rank", "missing_rank", "batch_mismatch",
    "src_len_mismatch", "not_an_array",
]  # fmt: skip
BAD_CASES = [
    *(("encoder", c) for c in [*COMMON_BAD, "id_out_of_vocabulary"]),
    *(("decoder_step", c) for c in [*COMMON_BAD, "fixed_axis_wrong"]),
]


@backend_names
@pytest.mark.parametrize(("component", "case"), BAD_CASES)
def test_bad_inputs_are_invalid_input(name, component, case, loaded, config, version_dir, make_feeds):
    bad = _bad_cases(component, make_feeds(component, DIMS[1]))[case]
    b = get_loaded(loaded, config, version_dir, name, component)
    with pytest.raises(InvalidInput) as err:
        b.infer(bad)  # type: ignore[arg-type]
    assert err.value.message
    assert b.infer(make_feeds(component, DIMS[1]))  # still serving afterwards


@backend_names
def test_concurrent_calls_agree(name, loaded, config, version_dir, make_feeds):
    b = get_loaded(loaded, config, version_dir, name, "encoder")
    feeds = [make_feeds("encoder", DIMS[2], seed=s) for s in range(2)]
    expected = [b.infer(f) for f in feeds]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                got = b.infer(feeds[i])
                for k, v in expected[i].items():
                    np.testing.assert_array_equal(got[k], v)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@backend_names
def test_describe_and_close(name, config, version_dir):
    cls = get_backend(name)
    b = cls.load(artifact_dir(config, version_dir, name), C("encoder"), "cpu", cls.Options())
    info = b.describe()
    assert info["backend"] == name
    b.close()
    b.close()  # idempotent


# --- load failures --------------------------------------------------------------------------------


@backend_names
def test_missing_artifact_is_a_load_error(name, tmp_path: Path, config, version_dir):
    artifact_dir(config, version_dir, name)  # skip backends the model does not list
    cls = get_backend(name)
    with pytest.raises(ModelLoadError):
        cls.load(tmp_path / "missing", C("encoder"), "cpu", cls.Options())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError):
        cls.load(tmp_path / "empty", C("encoder"), "cpu", cls.Options())


@backend_names
def test_corrupt_artifact_is_a_load_error(name, tmp_path: Path, config, version_dir):
    src = artifact_dir(config, version_dir, name)
    bad = tmp_path / "corrupt"
    shutil.copytree(src, bad, ignore=shutil.ignore_patterns("torch"))
    rng = np.random.default_rng(0)
    for f in bad.rglob("*"):
        if f.is_file():
            f.write_bytes(rng.bytes(max(64, min(f.stat().st_size, 4096))))
    cls = get_backend(name)
    with pytest.raises(ModelLoadError):
        cls.load(bad, C("encoder"), "cpu", cls.Options())


@backend_names
def test_unknown_component_is_a_load_error(name, config, version_dir):
    cls = get_backend(name)
    with pytest.raises(ModelLoadError):
        cls.load(artifact_dir(config, version_dir, name), C("no_such_component"), "cpu", cls.Options())


def test_onnxruntime_load_errors_name_the_path(tmp_path: Path):
    cls = get_backend("onnxruntime")
    with pytest.raises(ModelLoadError, match=r"'encoder\.onnx' does not exist"):
        cls.load(tmp_path, C("encoder"), "cpu", cls.Options())
    (tmp_path / "encoder.onnx").write_bytes(np.random.default_rng(1).bytes(512))
    with pytest.raises(ModelLoadError, match=r"cannot load encoder\.onnx") as err:
        cls.load(tmp_path, C("encoder"), "cpu", cls.Options())
    assert str(tmp_path) not in str(err.value)  # no host path in what a client may read
    outside = tmp_path.parent / "outside.onnx"
    outside.write_bytes(b"x")
    (tmp_path / "link.onnx").symlink_to(outside)
    for file in ("../outside.onnx", str(outside), "link.onnx"):
        with pytest.raises(ModelLoadError, match="resolves outside the model's version folder"):
            cls.load(tmp_path, C("encoder", file), "cpu", cls.Options())


def test_torch_unknown_component_lists_known_ones(version_dir: Path):
    cls = get_backend("torch")
    with pytest.raises(ModelLoadError, match=r"known: \['decoder_step', 'encoder'\]"):
        cls.load(version_dir / "torch", C("classify"), "cpu", cls.Options())


def test_torch_corrupt_weights_is_a_load_error(version_dir: Path, tmp_path: Path):
    bad = tmp_path / "torch"
    shutil.copytree(version_dir / "torch", bad)
    (bad / checkpoint.WEIGHTS).write_bytes(np.random.default_rng(2).bytes(1024))
    cls = get_backend("torch")
    with pytest.raises(ModelLoadError, match="cannot load the PyTorch checkpoint torch"):
        cls.load(bad, C("encoder"), "cpu", cls.Options())


def test_onnxruntime_options_apply(version_dir: Path, make_feeds, reference):
    cls = get_backend("onnxruntime")
    opts = cls.Options(graph_optimization_level="disable", enable_cpu_mem_arena=False, enable_mem_pattern=False)
    b = cls.load(version_dir, C("encoder"), "cpu", opts)
    feeds = make_feeds("encoder", DIMS[2])
    for k, v in run_reference(reference["encoder"], feeds).items():
        np.testing.assert_allclose(b.infer(feeds)[k], v, rtol=0, atol=ATOL)
    assert b.describe()["provider"] == "CPUExecutionProvider"
    with pytest.raises(ValidationError):
        cls.Options(graph_optimization_level="max")  # type: ignore[arg-type]
    b.close()


# --- CUDA requested on a machine without it ------------------------------------------------------


@pytest.mark.skipif(CUDA_ORT, reason="this ONNX Runtime has the CUDA provider")
def test_onnxruntime_cuda_without_provider_refuses_to_load(version_dir: Path):
    cls = get_backend("onnxruntime")
    with pytest.raises(ModelLoadError, match="CUDA was requested but ONNX Runtime would run on CPU"):
        cls.load(version_dir, C("encoder"), "cuda", cls.Options())


@pytest.mark.skipif(CUDA_ORT, reason="this ONNX Runtime has the CUDA provider")
def test_onnxruntime_cuda_fallback_reports_cpu(version_dir: Path, make_feeds, reference):
    cls = get_backend("onnxruntime")
    b = cls.load(version_dir, C("encoder"), "cuda", cls.Options(allow_cpu_fallback=True))
    info = b.describe()
    assert info["provider"] == "CPUExecutionProvider" and info["providers"] == ["CPUExecutionProvider"]
    assert info["device"] == "cuda" and info["cpu_fallback"] is True
    feeds = make_feeds("encoder", DIMS[1])
    np.testing.assert_allclose(
        b.infer(feeds)["memory"], run_reference(reference["encoder"], feeds)["memory"], rtol=0, atol=ATOL
    )


@pytest.mark.skipif(CUDA_TORCH, reason="torch has a CUDA device")
def test_torch_cuda_unavailable_refuses_to_load(version_dir: Path):
    cls = get_backend("torch")
    with pytest.raises(ModelLoadError, match="CUDA was requested"):
        cls.load(version_dir / "torch", C("encoder"), "cuda", cls.Options())


# --- real GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_ORT, reason="needs onnxruntime-gpu with a CUDA device")
@components
def test_onnxruntime_cuda_runs_on_cuda(component, version_dir: Path, make_feeds, reference):
    cls = get_backend("onnxruntime")
    b = cls.load(version_dir, C(component), "cuda", cls.Options())
    assert b.describe()["provider"] == "CUDAExecutionProvider"
    feeds = make_feeds(component, DIMS[2])
    for k, v in run_reference(reference[component], feeds).items():
        np.testing.assert_allclose(b.infer(feeds)[k], v, rtol=0, atol=ATOL, err_msg=k)
    b.close()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_TORCH, reason="needs a CUDA device")
@components
def test_torch_cuda_matches_the_graph(component, version_dir: Path, make_feeds, reference):
    cls = get_backend("torch")
    b = cls.load(version_dir / "torch", C(component), "cuda", cls.Options())
    assert b.describe()["device"] == "cuda"
    feeds = make_feeds(component, DIMS[2])
    for k, v in run_reference(reference[component], feeds).items():
        np.testing.assert_allclose(b.infer(feeds)[k], v, rtol=0, atol=ATOL, err_msg=k)
    b.close()
