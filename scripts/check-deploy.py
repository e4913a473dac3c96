#!/usr/bin/env python3
"""Render every kustomization under deploy/k8s and validate what it renders, offline.

    python3 scripts/check-deploy.py [--root deploy/k8s] [--out DIR]

For each folder holding a kustomization.yaml (components are rendered through the overlays that
use them): `kubectl kustomize` must render it; `kubernetes-validate --strict` must accept every
built-in kind against the oldest and the newest Kubernetes the manifests support; every custom
resource must validate with `check-jsonschema` against its CRD's schema vendored under
<root>/schemas/<group>/<kind>_<version>.json (a custom resource without one fails).
scripts/check-deploy.sh installs the tools when they are missing and runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
# 1.30: the oldest with lifecycle.preStop.sleep on by default (native gRPC probes: 1.27)
KUBE_VERSIONS = ("1.30.0", "1.37.0")


def tool(name: str) -> str:
    """The tool installed beside this Python (the pinned dev extra) first, then PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"check-deploy: {name} not found: run scripts/check-deploy.sh, which installs it")
    return found


def kustomizations(root: Path) -> list[Path]:
    """Folders to render: every kustomization that is not a Component."""
    found = []
    for path in sorted(root.rglob("kustomization.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("kind") != "Component":
            found.append(path.parent)
    return found


def render(kubectl: str, folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"kubectl kustomize failed: {out.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    if not docs:
        raise ValueError("kubectl kustomize rendered nothing")
    return docs


def is_builtin(api_version: str) -> bool:
    """Core and *.k8s.io groups (apps/v1, policy/v1, ...) are Kubernetes' own kinds."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def schema_path(root: Path, doc: dict[str, Any]) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return root / "schemas" / group / f"{doc['kind'].lower()}_{version}.json"


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"


def validate_builtin(files: dict[Path, str]) -> dict[str, list[str]]:
    """kubernetes-validate --strict over all files at once, per version: {label: errors}.

    A kind it has no schema for counts as an error: only built-in kinds are sent to it.
    """
    errors: dict[str, list[str]] = defaultdict(list)
    for version in KUBE_VERSIONS:
        cmd = [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        bad = [ln for ln in lines if ln.startswith("ERROR") or "Couldn't find schema" in ln]
        if out.returncode != 0 and not bad:
            bad = lines or [f"kubernetes-validate exited {out.returncode}"]
        for line in bad:
            owners = [label for path, label in files.items() if f" {path} " in line] or list(files.values())
            for label in owners:
                errors[label].append(line.replace(f" {_path_in(line, files)} ", " ", 1))
    return errors


def _path_in(line: str, files: dict[Path, str]) -> str:
    return next((str(p) for p in files if f" {p} " in line), "")


def validate_custom(root: Path, docs: dict[str, list[dict[str, Any]]], work: Path) -> dict[str, list[str]]:
    """check-jsonschema of every custom resource against its vendored CRD schema: {label: errors}."""
    by_schema: dict[Path, dict[Path, str]] = defaultdict(dict)
    errors: dict[str, list[str]] = defaultdict(list)
    for n, (label, items) in enumerate(docs.items()):
        for i, doc in enumerate(items):
            schema = schema_path(root, doc)
            if not schema.exists():
                errors[label].append(
                    f"{name_of(doc)}: no CRD schema {schema.relative_to(root)} (see schemas/README.md)"
                )
                continue
            path = work / f"{n}-{i}-{doc['kind'].lower()}.json"
            path.write_text(json.dumps(doc))
            by_schema[schema][path] = label
    for schema, files in by_schema.items():
        cmd = [tool("check-jsonschema"), "--regex-variant", "python", "--schemafile", str(schema), *map(str, files)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode == 0:
            continue
        text = (out.stdout + out.stderr).strip()
        owners = {label for path, label in files.items() if str(path) in text} or set(files.values())
        for label in owners:
            errors[label].append(f"check-jsonschema --schemafile {schema.relative_to(root)}:\n{text}")
    return errors


def check(root: Path, out: Path | None = None) -> int:
    kubectl = tool("kubectl")
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout.split("\n")
    print(f"kubectl: {kubectl} ({'; '.join(v for v in version if v)})")
    rendered: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, list[str]] = defaultdict(list)
    for folder in kustomizations(root):
        label = str(folder.relative_to(root))
        try:
            rendered[label] = render(kubectl, folder)
        except ValueError as err:
            errors[label].append(str(err))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for label, docs in rendered.items():
            (out / f"{label.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    builtin = {label: [d for d in docs if is_builtin(d["apiVersion"])] for label, docs in rendered.items()}
    custom = {label: [d for d in docs if not is_builtin(d["apiVersion"])] for label, docs in rendered.items()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {}
        for n, (label, docs) in enumerate(builtin.items()):
            if docs:
                path = work / f"builtin-{n}.yaml"
                path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
                files[path] = label
        for found in (validate_builtin(files) if files else {}, validate_custom(root, custom, work)):
            for label, errs in found.items():
                errors[label] += errs
    for label in sorted({*rendered, *errors}):
        if errors.get(label):
            print(f"FAIL {label}:")
            for err in errors[label]:
                print("  " + err.replace("\n", "\n  "))
            continue
        docs = rendered[label]
        kinds = ", ".join(sorted({d["kind"] for d in custom[label]}))
        print(
            f"ok   {label}: {len(docs)} objects; built-in kinds valid (kubernetes-validate --strict, Kubernetes "
            f"{' and '.join(KUBE_VERSIONS)}): {len(builtin[label])}"
            + (f"; valid against their CRD schemas (check-jsonschema): {kinds}" if kinds else "")
        )
    failed = sum(1 for label in errors if errors[label])
    print(f"{len(rendered) + len([e for e in errors if e not in rendered])} kustomizations, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the deploy/k8s folder")
    parser.add_argument("--out", type=Path, help="also write each rendered kustomization here")
    args = parser.parse_args(argv)
    os.environ.setdefault("KUBECONFIG", os.devnull)  # rendering never needs a cluster
    return check(args.root.resolve(), args.out)


if __name__ == "__main__":
    sys.exit(main())
