"""deploy/k8s: every kustomization renders and validates offline (scripts/check-deploy.sh, as CI runs
it), the check fails on broken manifests, and what schemas cannot see agrees with the server:
ports, setting names, drain timings, metric names, the security context."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from serving.metrics import ServingMetrics
from serving.settings import GrpcSettings, HttpSettings, MetricsSettings, ServerSettings
from tests.helpers.k8s import adapter_query, adapter_rules
from tests.helpers.paths import K8S, ROOT

KUSTOMIZATIONS = ["base", "kserve", "overlays/cpu", "overlays/cpu-keda", "overlays/cpu-pvc", "overlays/cuda",
                  "prometheus-adapter"]  # fmt: skip
INSTALL_FAILED = 3  # scripts/check-deploy.sh's exit status when pip cannot install a missing tool


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-deploy.sh"), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    if out.returncode == INSTALL_FAILED:
        pytest.skip(f"a validation tool could not be installed: {out.stderr.strip()[-500:]}")
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """Runs the CI check once; {kustomization: its rendered objects}."""
    out = tmp_path_factory.mktemp("rendered")
    result = run_check("--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in KUSTOMIZATIONS:
        assert re.search(rf"^ok +{re.escape(name)}: ", result.stdout, re.M), result.stdout
    assert f"{len(KUSTOMIZATIONS)} kustomizations, 0 failed" in result.stdout
    return {
        name: list(yaml.safe_load_all((out / f"{name.replace('/', '-')}.yaml").read_text())) for name in KUSTOMIZATIONS
    }


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServerSettings:
    """The settings the server builds from this environment; every ATTNSERVE_* name must be a real
    setting (pydantic-settings silently ignores unknown ones, so a typo would change nothing)."""
    for key, value in env.items():
        if not key.startswith("ATTNSERVE_"):
            continue
        model: Any = ServerSettings
        for part in key.removeprefix("ATTNSERVE_").lower().split("__"):
            assert part in model.model_fields, f"{key}: no such server setting"
            model = model.model_fields[part].annotation
        monkeypatch.setenv(key, value)
    return ServerSettings()


def test_every_kustomization_renders_and_validates(rendered):
    assert set(rendered) == set(KUSTOMIZATIONS)
    kinds = {d["kind"] for docs in rendered.values() for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "ScaledObject", "ServingRuntime", "InferenceService"} <= kinds


@pytest.mark.packaging  # runs the deployment tools (kubectl kustomize)
def test_the_check_fails_on_broken_manifests(tmp_path):
    """Negative controls: a misspelt built-in field, a misspelt custom-resource field, a wrong type,
    and a custom resource whose CRD schema is not vendored each fail the check, with the reason."""
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("kserve", "prometheus-adapter", "overlays"))
    deployment = root / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("terminationGracePeriodSeconds:", "terminationGracePeriod:"))
    monitor = root / "base" / "servicemonitor.yaml"
    monitor.write_text(monitor.read_text().replace("interval: 5s", "intervall: 5s"))
    (root / "components" / "keda" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [scaledobject.yaml]\n"
    )  # render the component alone, with a wrong type in it
    scaled = root / "components" / "keda" / "scaledobject.yaml"
    scaled.write_text(scaled.read_text().replace("minReplicaCount: 2", "minReplicaCount: two"))
    (root / "base" / "destinationrule.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: attnserve}\n"
        "spec: {host: attnserve}\n"
    )
    kustomization = root / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "  - destinationrule.yaml\n")

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-deploy.py"), "--root", str(root)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    assert "FAIL base:" in text and "FAIL components/keda:" in text
    assert "'terminationGracePeriod' was unexpected" in text
    assert "intervall" in text and "servicemonitor_v1.json" in text
    assert "'two' is not of type 'integer'" in text
    assert "DestinationRule/attnserve: no CRD schema schemas/networking.istio.io/destinationrule_v1.json" in text
    assert "2 kustomizations, 2 failed" in text


@pytest.mark.packaging  # runs the monitoring generator
def test_generated_monitoring_is_current_and_staleness_is_caught(tmp_path):
    gen = [sys.executable, str(ROOT / "scripts" / "gen-k8s-monitoring.py")]
    assert subprocess.run([*gen, "--check"], capture_output=True).returncode == 0
    for name in ("servicemonitor.yaml", "prometheusrule.yaml"):
        shutil.copy(K8S / "base" / name, tmp_path / name)
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(stale.read_text().replace("[1m]", "[5m]", 1))
    out = subprocess.run([*gen, "--check", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "-" in out.stdout and "out of date" in out.stderr


def test_prometheus_rule_carries_every_rule_of_deploy_prometheus(rendered):
    rule = one(rendered["base"], "PrometheusRule")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    groups = [
        g
        for f in config["rule_files"]
        for g in yaml.safe_load((ROOT / "deploy" / "prometheus" / f).read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups


def test_deployment_matches_the_server(rendered, monkeypatch):
    docs = rendered["overlays/cpu"]
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    settings = settings_from(env_of(server), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": settings.grpc.port, "metrics": settings.metrics.port, "http": settings.http.port}
    assert (settings.grpc.port, settings.metrics.port) == (GrpcSettings().port, MetricsSettings().port) == (8001, 8002)
    assert settings.http.enabled and settings.http.port == HttpSettings().port == 8000  # Triton's REST port
    # the probes ask grpc.health.v1 on the gRPC port (service "": NOT_SERVING until loaded, and while draining)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"] == {"port": settings.grpc.port}, probe
    # drain: the grace period covers the preStop delay, the server's drain, and time to exit
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.drain_delay_seconds + settings.grace_seconds + 5
    assert settings.drain_delay_seconds == 0  # the preStop sleep is the delay for load balancers
    assert settings.grace_seconds == ServerSettings.model_fields["grace_seconds"].default == 10
    # the repository is a volume the server reads; the initContainer fills it
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["models"]["mountPath"] == str(settings.repository) and mounts["models"]["readOnly"]
    (init,) = pod["initContainers"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {str(settings.repository)}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.metrics.port)


def test_pods_run_restricted(rendered):
    for name in ("overlays/cpu", "overlays/cuda", "overlays/cpu-pvc"):
        pod = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        (server,) = pod["containers"]
        assert "/tmp" in {m["mountPath"] for m in server["volumeMounts"]}  # the one writable path
    namespace = one(rendered["overlays/cpu"], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_services_select_the_pods_and_the_monitor_one_service(rendered):
    docs = rendered["overlays/cpu"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    headless, cluster = one(docs, "Service", "attnserve-headless"), one(docs, "Service", "attnserve")
    for svc in (headless, cluster):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert {"name": "grpc", "port": 8001, "targetPort": "grpc"}.items() <= svc["spec"]["ports"][0].items()
    assert headless["spec"]["clusterIP"] == "None"
    http = [p for p in cluster["spec"]["ports"] if p["name"] == "http"]
    assert http == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = one(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [
        s["metadata"]["name"]
        for s in docs
        if s["kind"] == "Service" and selector.items() <= s["metadata"]["labels"].items()
    ]
    assert matched == ["attnserve"]  # scraped once, not once per Service
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in cluster["spec"]["ports"]}


def test_cuda_overlay_asks_for_a_gpu_and_runs_on_it(rendered, monkeypatch):
    (server,) = one(rendered["overlays/cuda"], "Deployment")["spec"]["template"]["spec"]["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["image"].endswith("-cuda")
    assert settings_from(env_of(server), monkeypatch).device == "cuda"


def _server_metric_names() -> set[str]:
    registry = CollectorRegistry()
    ServingMetrics(registry)
    names = set()
    for family in registry.collect():
        kind = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in kind}
    return names


def _metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\battnserve_[a-z_]+", promql))


def keda_query(rendered: dict[str, list[dict[str, Any]]]) -> str:
    (trigger,) = one(rendered["overlays/cpu-keda"], "ScaledObject")["spec"]["triggers"]
    return trigger["metadata"]["query"]


def test_autoscaling_uses_the_servers_metrics(rendered):
    exported = _server_metric_names()
    rules = adapter_rules()
    served = {r["name"]["as"] for r in rules}
    hpa = one(rendered["overlays/cpu"], "HorizontalPodAutoscaler")
    assert {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]} == served
    for rule in rules:
        assert _metric_names(rule["seriesQuery"] + rule["metricsQuery"]) <= exported, rule["name"]
        assert re.fullmatch(rule["name"]["matches"], _metric_names(rule["seriesQuery"]).pop())
    assert _metric_names(keda_query(rendered)) <= exported
    scaled = one(rendered["overlays/cpu-keda"], "ScaledObject")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"] == one(rendered["overlays/cpu-keda"], "Deployment")["metadata"]["name"]
    )
    assert not [d for d in rendered["overlays/cpu-keda"] if d["kind"] == "HorizontalPodAutoscaler"]


def test_autoscaling_queries_are_valid_promql(rendered, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here (.ci/run installs Debian's prometheus package)")
    exprs = [adapter_query(r, 'namespace="attnserve",pod="attnserve-0"', "pod") for r in adapter_rules()]
    exprs.append(keda_query(rendered))
    rules = {
        "groups": [{"name": "check", "rules": [{"record": f"check:q{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kserve_runtime_and_example(rendered, monkeypatch):
    docs = rendered["kserve"]
    runtime, isvc = one(docs, "ServingRuntime"), one(docs, "InferenceService")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert runtime["spec"]["protocolVersions"] == ["grpc-v2"]
    model = isvc["spec"]["predictor"]["model"]
    settings = settings_from(env_of(container) | env_of(model), monkeypatch)
    assert str(settings.repository) == "/mnt/models"
    assert container["ports"] == [{"name": "h2c", "containerPort": settings.grpc.port, "protocol": "TCP"}]
    assert not settings.http.enabled  # Knative serves one port: no REST listener beside it
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(settings.metrics.port)
    assert settings.models == [isvc["metadata"]["name"]]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "grpc-v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
