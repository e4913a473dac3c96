#!/usr/bin/env python3
"""Turn CustomResourceDefinition YAML files into strict JSON schemas for check-jsonschema.

    python3 scripts/crd-to-jsonschema.py --source "kedacore/keda v2.20.2 (68a5b50)" \\
        --out deploy/k8s/schemas keda.sh_scaledobjects.yaml

Each served version's openAPIV3Schema becomes <out>/<group>/<kind>_<version>.json (lower case),
the layout scripts/check_deploy.py looks schemas up by. The conversion is the one kubeconform's
openapi2jsonschema uses, made strict:
- descriptions are dropped (most of a CRD's size) and x-kubernetes-* markers removed;
- x-kubernetes-int-or-string becomes "integer or string", nullable adds "null";
- an object that lists its properties and does not preserve unknown fields gets
  additionalProperties: false, so a misspelt field fails instead of being pruned by the API server;
- apiVersion and kind are pinned to the CRD's, so a document can only match its own schema;
- a long subschema that repeats (a pod spec per component) is written once under definitions.
CEL rules (x-kubernetes-validations) cannot be expressed in JSON schema and are not checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SHARED_MIN_CHARS = 1000  # a repeated subschema at least this long moves to "definitions"


def python_pattern(pattern: str) -> str:
    """A CRD pattern (Go RE2 syntax) that Python's re compiles with the same meaning.

    RE2 takes a flag group anywhere ("^(?i)(abort|warn)?$"); Python 3.11 only at the start.
    """
    if pattern.startswith("^(?i)"):
        pattern = "(?i)^" + pattern[len("^(?i)") :]
    re.compile(pattern)  # fail here, not in the checker, on anything else Python cannot read
    return pattern


def convert(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 schema node (structural, as in a CRD) to a strict JSON schema node."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = convert(value)
        elif key in SCHEMA_LISTS:
            out[key] = [convert(sub) for sub in value]
        elif key == "pattern":
            out[key] = python_pattern(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _canonical(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _subschemas(node: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path step, child schema) of every schema directly inside a schema node."""
    found: list[tuple[str, Any]] = []
    for key, value in node.items():
        if key == "properties":
            found += [(f"properties/{name}", sub) for name, sub in value.items()]
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            found.append((key, value))
        elif key in SCHEMA_LISTS:
            found += [(f"{key}/{i}", sub) for i, sub in enumerate(value)]
    return found


def _rebuild(node: dict[str, Any], children: dict[str, Any]) -> dict[str, Any]:
    """`node` with its subschemas replaced by `children` (keyed as _subschemas names them)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: children[f"properties/{name}"] for name in value}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = children[key]
        elif key in SCHEMA_LISTS:
            out[key] = [children[f"{key}/{i}"] for i in range(len(value))]
        else:
            out[key] = value
    return out


def share_repeats(schema: dict[str, Any]) -> dict[str, Any]:
    """Move subschemas that occur more than once (pod specs, containers) to definitions, by $ref.

    KServe's InferenceService repeats the pod spec per component: 1.5 MB inline, a fraction shared.
    """
    counts: dict[str, int] = {}

    def count(node: dict[str, Any]) -> None:
        for _, child in _subschemas(node):
            count(child)
        key = _canonical(node)
        counts[key] = counts.get(key, 0) + 1

    count(schema)
    shared = {key for key, n in counts.items() if n > 1 and len(key) >= SHARED_MIN_CHARS}
    definitions: dict[str, Any] = {}

    def replace(node: dict[str, Any], top: bool = False) -> dict[str, Any]:
        key = _canonical(node)
        rebuilt = lambda: _rebuild(node, {step: replace(child) for step, child in _subschemas(node)})  # noqa: E731
        if top or key not in shared:
            return rebuilt()
        name = hashlib.sha256(key.encode()).hexdigest()[:12]
        if name not in definitions:
            definitions[name] = {}  # reserve first: a definition never contains itself
            definitions[name] = rebuilt()
        return {"$ref": f"#/definitions/{name}"}

    out = replace(schema, top=True)
    if definitions:
        out["definitions"] = dict(sorted(definitions.items()))
    return out


def schemas_of(crd: dict[str, Any], source: str) -> dict[Path, dict[str, Any]]:
    """{relative path: JSON schema} for every served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    result: dict[Path, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = convert(version["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "const": f"{group}/{version['name']}"}
        props["kind"] = {"type": "string", "const": kind}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        header = {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": f"{kind} {group}/{version['name']}",
            "$comment": f"generated by scripts/crd-to-jsonschema.py from {source}",
        }
        result[Path(group) / f"{kind.lower()}_{version['name']}.json"] = header | share_repeats(schema)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", nargs="+", type=Path, help="CRD YAML files")
    parser.add_argument("--out", type=Path, required=True, help="schema folder")
    parser.add_argument("--source", required=True, help="where the CRDs came from (repository, version, commit)")
    args = parser.parse_args(argv)
    for path in args.crds:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for rel, schema in schemas_of(doc, f"{args.source}: {path.name}").items():
                target = args.out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"{target} ({target.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
