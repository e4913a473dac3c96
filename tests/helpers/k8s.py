"""The prometheus-adapter rules of deploy/k8s, filled in as the adapter fills them."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.helpers.paths import K8S


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())["rules"]


def adapter_query(rule: dict[str, Any], matchers: str, group_by: str) -> str:
    """A rule's metricsQuery as prometheus-adapter fills its template in."""
    match = re.match(r"[a-z_]+", rule["seriesQuery"].strip("'\""))
    assert match is not None, rule["seriesQuery"]
    q = rule["metricsQuery"].replace("<<.Series>>", match.group(0))
    return q.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", group_by)
