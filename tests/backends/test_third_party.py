"""A backend from another distribution is found by name once pip-installed, with no code change.

The distribution is built and installed with pip into a private `--target` folder that only the
checking subprocess has on its path, so the shared environment (and other test runs using it)
never sees the `echo` backend, and teardown is deleting the folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "attnserve-echo-backend"
version = "0.0.1"
requires-python = ">=3.11"

[tool.setuptools]
py-modules = ["attnserve_echo_backend"]

[project.entry-points."attnserve.backends"]
echo = "attnserve_echo_backend:EchoBackend"
not-a-backend = "attnserve_echo_backend:NotABackend"
"""

MODULE = '''\
"""A third-party backend: y = scale * x + 1 and the row sums of x, computed with numpy."""

from pathlib import Path

import numpy as np

from backends.base import Backend, BackendOptions
from runtime.errors import InvalidInput, ModelLoadError
from runtime.tensors import Signature, TensorSpec


class EchoOptions(BackendOptions):
    scale: float = 1.0


class EchoBackend(Backend):
    name = "echo"
    Options = EchoOptions

    def __init__(self, scale):
        self.scale = scale

    @classmethod
    def load(cls, artifact_dir, component, device, options):
        if device != "cpu":
            raise ModelLoadError("echo runs on cpu only")
        if component.name != "echo" or not Path(artifact_dir).is_dir():
            raise ModelLoadError(f"no component {component.name!r} in {artifact_dir}")
        return cls(cls.Options.model_validate(options.model_dump()).scale)

    @property
    def signature(self):
        return Signature(
            inputs=(TensorSpec.of("x", "float32", "batch", "n"),),
            outputs=(TensorSpec.of("y", "float32", "batch", "n"), TensorSpec.of("total", "float32", "batch")),
        )

    def infer(self, inputs):
        x = inputs.get("x")
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
            raise InvalidInput("echo: x must be a float32 [batch, n] array")
        return {"y": self.scale * x + 1, "total": x.sum(axis=1)}


class NotABackend:
    pass
'''

CHECK = """\
import json
import sys
from pathlib import Path

import numpy as np

from backends.loader import available_backends, get_backend
from runtime.config import Component
from runtime.errors import InvalidInput, ModelLoadError
from runtime.tensors import Signature

cls = get_backend("echo")
layers = sorted({m.split(".")[0] for m in sys.modules} & {"serving", "models", "exporters", "torch", "onnxruntime"})
backend = cls.load(Path("."), Component("echo", "", Signature(inputs=(), outputs=())), "cpu", cls.Options(scale=2.0))
out = backend.infer({"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
errors = {}
try:
    backend.infer({"x": np.zeros((2, 3), np.int64)})
except InvalidInput as exc:
    errors["bad_input"] = type(exc).__name__
try:
    get_backend("not-a-backend")
except ModelLoadError as exc:
    errors["not_a_backend"] = exc.message
print(json.dumps({
    "installed": sorted(available_backends()),
    "class": f"{cls.__module__}.{cls.__name__}",
    "y": out["y"].tolist(),
    "total": out["total"].tolist(),
    "signature": [t.name for t in backend.signature.inputs + backend.signature.outputs],
    "describe": backend.describe(),
    "errors": errors,
    "layers": layers,
}))
"""


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory) -> Path:
    """`pip install` the echo distribution into a private folder; removed with the tmp folder."""
    root = tmp_path_factory.mktemp("third_party")
    src = root / "attnserve-echo-backend"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "attnserve_echo_backend.py").write_text(MODULE)
    site = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    cmd += ["--disable-pip-version-check", "--no-cache-dir", "--target", str(site), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    assert list(site.glob("attnserve_echo_backend-0.0.1.dist-info/entry_points.txt"))
    return site


def run_fresh(code: str, site: Path | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_third_party_backend_is_found_by_name(echo_site: Path):
    proc = run_fresh(CHECK, echo_site)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"echo", "onnxruntime", "torch"} <= set(got["installed"])
    assert got["class"] == "attnserve_echo_backend.EchoBackend"
    assert got["y"] == [[1.0, 3.0, 5.0], [7.0, 9.0, 11.0]]
    assert got["total"] == [3.0, 12.0]
    assert got["signature"] == ["x", "y", "total"]
    assert got["layers"] == []  # a backend needs only the contract layer and backends.base
    assert got["describe"] == {"backend": "echo"}
    assert got["errors"]["bad_input"] == "InvalidInput"
    assert "not a subclass of backends.base.Backend" in got["errors"]["not_a_backend"]


def test_without_the_distribution_echo_is_unknown(echo_site: Path):
    code = """\
    from backends.loader import get_backend
    from runtime.errors import InvalidInput
    try:
        get_backend("echo")
    except InvalidInput as exc:
        print(exc.message)
    """
    proc = run_fresh(code, None)
    assert proc.returncode == 0, proc.stderr
    assert "unknown backend 'echo'; known: [" in proc.stdout and "'onnxruntime', 'torch']" in proc.stdout
