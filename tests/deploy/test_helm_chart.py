"""The Helm chart in helm/vte-proxy, rendered with Helm's own engine (helm-python-sdk, no
helm binary), linted, and every manifest validated against the Kubernetes 1.30 schemas
(kubernetes-validate); the Prometheus Operator objects, which those schemas lack, are
checked by hand and their PromQL is parsed (promql-parser)."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import promql_parser
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "vte-proxy"
KUBE_VERSION = "1.30.0"
RELEASE = "gw"
NAMESPACE = "llm"
FULLNAME = "gw-vte-proxy"
CONFIG_DIR = "/etc/vte-proxy"
CONFIG_FILE = "/etc/vte-proxy/gateway.yaml"
GATEWAY_DEFAULT_SHUTDOWN_GRACE = 30
THREE_REPLICAS_EXAMPLE = CHART_DIR / "examples" / "three-replicas-redis.yaml"

# The metric names of PRODUCT.md (histograms with their series suffixes).
METRICS = {
    "vte_requests_total",
    "vte_request_duration_seconds_bucket",
    "vte_request_duration_seconds_sum",
    "vte_request_duration_seconds_count",
    "vte_time_to_first_token_seconds_bucket",
    "vte_time_to_first_token_seconds_sum",
    "vte_time_to_first_token_seconds_count",
    "vte_tokens_total",
    "vte_upstream_errors_total",
    "vte_usage_missing_total",
    "vte_in_flight_requests",
    "vte_config_reloads_total",
    "vte_config_last_reload_success_timestamp_seconds",
    "vte_models_available",
}

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(CHART_DIR)
    try:
        yield loaded
    finally:
        loaded.close()


def render_raw(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


def render(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> list[Doc]:
    docs: list[Doc] = []
    for path, text in sorted(render_raw(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def only(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def deployment(docs: list[Doc]) -> Doc:
    return only(docs, "Deployment")


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = deployment(docs)["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    containers = pod_spec(docs)["containers"]
    assert [c["name"] for c in containers] == ["vte-proxy"]
    result: Doc = containers[0]
    return result


def walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from walk_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_keys(item)


def is_duration(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", value) is not None


def seconds(duration: str) -> float:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * factor[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration))


def check_promql(expr: str) -> set[str]:
    """Parse expr as PromQL (raises on a syntax error) and return the metric names used."""
    promql_parser.parse(expr)
    names = set(re.findall(r"\b(vte_[a-z0-9_]+)\b", expr))
    assert names, f"no vte_ metric in {expr!r}"
    unknown = names - METRICS
    assert not unknown, f"unknown metrics {unknown} in {expr!r}"
    return names


def validate_service_monitor(doc: Doc, service: Doc) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "ServiceMonitor"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "must select the Service"
    assert spec["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    allowed = {
        "port",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "honorLabels",
        "authorization",
        "relabelings",
        "metricRelabelings",
    }
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= allowed, set(endpoint) - allowed
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert endpoint["scheme"] in {"http", "https"}
        assert is_duration(endpoint["interval"]) and is_duration(endpoint["scrapeTimeout"])
        assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
        assert isinstance(endpoint["honorLabels"], bool)
        if "authorization" in endpoint:
            auth = endpoint["authorization"]
            assert auth["type"] == "Bearer"
            assert set(auth["credentials"]) == {"name", "key"}
        for key in ("relabelings", "metricRelabelings"):
            assert isinstance(endpoint.get(key, []), list)


def validate_prometheus_rule(doc: Doc) -> dict[str, Doc]:
    """Check the PrometheusRule structure; return its alerting rules by name."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    groups = doc["spec"]["groups"]
    assert isinstance(groups, list) and groups
    alerts: dict[str, Doc] = {}
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        assert isinstance(group["rules"], list) and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            allowed = {"alert", "record", "expr", "for", "labels", "annotations"}
            assert set(rule) <= allowed, set(rule) - allowed
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            promql_parser.parse(rule["expr"])
            if "for" in rule:
                assert is_duration(rule["for"]), rule["for"]
            for key in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.get(key, {}).items()), rule.get(
                    key
                )
            if "alert" in rule:
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
                alerts[rule["alert"]] = rule
    return alerts


def validate_all(docs: list[Doc]) -> None:
    service = only(docs, "Service")
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            if doc["kind"] == "ServiceMonitor":
                validate_service_monitor(doc, service)
            else:
                validate_prometheus_rule(doc)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:  # pragma: no cover - message only
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
        assert doc["metadata"]["namespace"]


# --------------------------------------------------------------------------- scenarios

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "ingress": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
            "hosts": [{"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}],
        }
    },
    "hpa": {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 6,
            "targetMemoryUtilizationPercentage": 80,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        }
    },
    "pdb": {"replicaCount": 3, "podDisruptionBudget": {"enabled": True}},
    "pdbMaxUnavailable": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
    "networkPolicy": {"networkPolicy": {"enabled": True}},
    "networkPolicyRestricted": {
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "allowAllEgress": False,
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}],
        }
    },
    "serviceMonitor": {
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
            "scrapeTimeout": "5s",
        }
    },
    "serviceMonitorAuth": {
        "serviceMonitor": {
            "enabled": True,
            "namespace": "monitoring",
            "authorization": {"secretName": "metrics-key", "secretKey": "key"},
        }
    },
    "prometheusRule": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "dashboard": {"dashboard": {"enabled": True}},
    "existingSecret": {"existingSecret": "vte-secrets"},
    "secretEnv": {"secretEnv": {"VTE_DEMO_KEY": "demo-key-123", "OPENAI_API_KEY": "sk-test"}},
    "existingConfigMap": {"config": {"existingConfigMap": "my-gateway-config"}},
    "rollout": {"config": {"reloadStrategy": "rollout"}},
    "stringConfig": {
        "config": {
            "gateway": "version: 1\nkeys:\n  - name: demo\n    key: ${VTE_DEMO_KEY}\n"
            "providers:\n  - name: demo\n    type: echo\n    prefix: demo\n    models: [echo]\n"
        }
    },
    "nodePort": {"service": {"type": "NodePort", "nodePort": 30850}},
    "redisLimits": {"limits": {"store": "redis", "redis": {"existingSecret": "vte-redis"}}},
    "threeReplicasRedisExample": yaml.safe_load(THREE_REPLICAS_EXAMPLE.read_text()),
    "imageDigest": {"image": {"repository": "registry.example/vte-proxy", "digest": "sha256:" + "a" * 64}},
    "everything": {
        "replicaCount": 2,
        "ingress": {"enabled": True},
        "autoscaling": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {}}]},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True, "namespace": "grafana"},
        "existingSecret": "vte-secrets",
        "secretEnv": {"VTE_DEMO_KEY": "x"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraEnvFrom": [{"configMapRef": {"name": "more"}}],
        "extraArgs": ["--workers", "1"],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/custom", "readOnly": True}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vte-proxy"}},
            }
        ],
        "priorityClassName": "high",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "serviceAccount": {"annotations": {"example.com/role": "vte"}},
        "tmpVolume": {"medium": "Memory"},
        "config": {"reloadStrategy": "rollout"},
        "telemetry": {"enabled": True, "endpoint": "http://otel-collector.observability:4318",
                      "headersSecret": {"name": "otlp", "key": "headers"},
                      "resourceAttributes": {"deployment.environment.name": "prod"}},
    },
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_and_validates_for_kubernetes_1_30(chart: helm_python.Chart, scenario: str) -> None:
    values = SCENARIOS[scenario]
    chart.validate_schema(values)
    docs = render(chart, values)
    validate_all(docs)
    assert {"Deployment", "Service"} <= set(kinds(docs))
    # the config directory is never mounted with subPath, whatever the switches
    assert "subPath" not in set(walk_keys(docs)) and "subPathExpr" not in set(walk_keys(docs))
    # the pod template selects itself, the Service selects the pods
    dep = deployment(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert only(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = helm_python.lint(CHART_DIR, SCENARIOS[scenario], strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


# --------------------------------------------------------------------------- defaults


def test_chart_metadata(chart: helm_python.Chart) -> None:
    metadata = chart.metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == "vte-proxy"
    assert metadata["appVersion"] == "0.1.0"
    assert metadata["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])


def test_default_objects(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert kinds(docs) == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"]
    service = only(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8050, "targetPort": "http", "protocol": "TCP"}]
    assert container(docs)["ports"] == [{"name": "http", "containerPort": 8050, "protocol": "TCP"}]
    assert deployment(docs)["metadata"]["name"] == FULLNAME
    assert deployment(docs)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_config_is_mounted_as_a_directory_and_args_point_into_it(chart: helm_python.Chart) -> None:
    docs = render(chart)
    main = container(docs)
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    args = main["args"]
    assert args[0] == "serve"
    config_path = args[args.index("--config") + 1]
    assert config_path == CONFIG_FILE
    assert os.path.dirname(config_path) == mounts["config"]["mountPath"]
    assert args[args.index("--port") + 1] == "8050"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    configmap = only(docs, "ConfigMap")
    assert volumes["config"] == {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}}
    assert set(configmap["data"]) == {os.path.basename(config_path)}


def test_existing_configmap_replaces_the_chart_configmap(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["existingConfigMap"])
    assert "ConfigMap" not in kinds(docs)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "my-gateway-config"}
    assert CONFIG_FILE in container(docs)["args"]


def test_default_config_is_the_echo_demo(chart: helm_python.Chart) -> None:
    gateway = yaml.safe_load(only(render(chart), "ConfigMap")["data"]["gateway.yaml"])
    assert gateway["version"] == 1
    assert gateway["providers"] == [{"name": "demo", "type": "echo", "prefix": "demo", "models": ["echo"]}]
    assert gateway["keys"] == [{"name": "demo", "key": "${VTE_DEMO_KEY}", "status": True}]


def test_string_config_is_used_verbatim(chart: helm_python.Chart) -> None:
    text = SCENARIOS["stringConfig"]["config"]["gateway"]
    data = only(render(chart, SCENARIOS["stringConfig"]), "ConfigMap")["data"]["gateway.yaml"]
    assert data.strip() == text.strip()


def test_probes(chart: helm_python.Chart) -> None:
    main = container(render(chart))
    port_names = {p["name"] for p in main["ports"]}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["port"] in port_names
    assert main["readinessProbe"]["httpGet"]["port"] in port_names


def test_security_context(chart: helm_python.Chart) -> None:
    docs = render(chart)
    pod = pod_spec(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert only(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the only writable path of the read-only container: an emptyDir at /tmp
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]
    assert all(m.get("readOnly") for m in mounts.values() if m["mountPath"] != "/tmp")


def test_log_format_json_by_default(chart: helm_python.Chart) -> None:
    env = {e["name"]: e.get("value") for e in container(render(chart))["env"]}
    assert env["VTE_LOG_FORMAT"] == "json"
    env = {e["name"]: e.get("value") for e in container(render(chart, {"logging": {"format": "text"}}))["env"]}
    assert env["VTE_LOG_FORMAT"] == "text"


def test_telemetry_is_off_by_default(chart: helm_python.Chart) -> None:
    names = {e["name"] for e in container(render(chart))["env"]}
    assert not {n for n in names if n.startswith("OTEL_")}


def test_telemetry_sets_the_standard_otel_variables(chart: helm_python.Chart) -> None:
    values = {"telemetry": {"enabled": True, "endpoint": "http://collector:4318", "sampleRatio": 0.25,
                            "headersSecret": {"name": "otlp", "key": "headers"},
                            "resourceAttributes": {"deployment.environment.name": "prod"}}}
    chart.validate_schema(values)
    env = {e["name"]: e for e in container(render(chart, values))["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://collector:4318"
    assert env["OTEL_SERVICE_NAME"]["value"] == f"{RELEASE}-vte-proxy"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {"secretKeyRef": {"name": "otlp", "key": "headers"}}
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == (
        "k8s.pod.name=$(VTE_POD_NAME),k8s.namespace.name=$(VTE_POD_NAMESPACE),deployment.environment.name=prod")
    names = list(env)  # Kubernetes expands $(VAR) only from variables defined before
    assert names.index("VTE_POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    named = {"telemetry": {"enabled": True, "endpoint": "http://c:4318", "serviceName": "gateway"}}
    env = {e["name"]: e for e in container(render(chart, named))["env"]}
    assert env["OTEL_SERVICE_NAME"]["value"] == "gateway" and "OTEL_EXPORTER_OTLP_HEADERS" not in env


@pytest.mark.parametrize("bad", [{"enabled": True}, {"enabled": True, "endpoint": "collector:4318"},
                                 {"endpoint": "http://user:pw@c:4318"}, {"sampleRatio": 2}, {"exporter": "grpc"}])
def test_telemetry_mistakes_are_refused(chart: helm_python.Chart, bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema({"telemetry": bad})


def test_no_secret_wiring_by_default(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert "Secret" not in kinds(docs)
    assert "envFrom" not in container(docs)
    notes = render_raw(chart)["vte-proxy/templates/NOTES.txt"]
    assert "VTE_DEMO_KEY" in notes and "WARNING" in notes


def test_existing_secret_is_loaded_with_env_from(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["existingSecret"])
    assert "Secret" not in kinds(docs)
    assert container(docs)["envFrom"] == [{"secretRef": {"name": "vte-secrets"}}]
    annotations = deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_secret_env_creates_a_secret_loaded_with_env_from(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["secretEnv"])
    secret = only(docs, "Secret")
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"VTE_DEMO_KEY": "demo-key-123", "OPENAI_API_KEY": "sk-test"}
    assert container(docs)["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    # env vars are read at start: a changed secretEnv must roll the pods
    annotations = deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    other = render(chart, {"secretEnv": {"VTE_DEMO_KEY": "another"}})
    assert (
        deployment(other)["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
        != (annotations["checksum/secret"])
    )


def test_both_secrets_and_extra_env_from(chart: helm_python.Chart) -> None:
    env_from = container(render(chart, SCENARIOS["everything"]))["envFrom"]
    assert env_from == [
        {"secretRef": {"name": f"{FULLNAME}-env"}},
        {"secretRef": {"name": "vte-secrets"}},  # last wins on duplicate names
        {"configMapRef": {"name": "more"}},
    ]


def test_graceful_shutdown_defaults(chart: helm_python.Chart) -> None:
    docs = render(chart)
    pod = pod_spec(docs)
    command = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    match = re.fullmatch(r"import time; time\.sleep\((\d+)\)", command[2])
    assert match, command
    pre_stop = int(match.group(1))
    assert pre_stop == 5
    assert pod["terminationGracePeriodSeconds"] == 45
    assert pod["terminationGracePeriodSeconds"] > pre_stop + GATEWAY_DEFAULT_SHUTDOWN_GRACE


def test_pre_stop_can_be_disabled(chart: helm_python.Chart) -> None:
    docs = render(chart, {"shutdown": {"preStopSleepSeconds": 0, "terminationGracePeriodSeconds": 31}})
    assert "lifecycle" not in container(docs)


@pytest.mark.parametrize(
    ("shutdown_grace", "termination", "ok"),
    [
        (None, 35, False),  # 5 + default 30 is not below 35
        (None, 36, True),
        ("40s", 45, False),
        ("40s", 46, True),
        ("2m", 120, False),
        ("2m", 130, True),
        (10, 20, True),
        ("500ms", 7, True),
    ],
)
def test_termination_grace_must_exceed_pre_stop_plus_shutdown_grace(
    chart: helm_python.Chart, shutdown_grace: Any, termination: int, ok: bool
) -> None:
    values: dict[str, Any] = {"shutdown": {"terminationGracePeriodSeconds": termination}}
    if shutdown_grace is not None:
        gateway = copy.deepcopy(chart.values["config"]["gateway"])
        gateway["server"] = {"shutdown_grace": shutdown_grace}
        values["config"] = {"gateway": gateway}
    if ok:
        assert pod_spec(render(chart, values))["terminationGracePeriodSeconds"] == termination
    else:
        with pytest.raises(helm_python.HelmError, match="terminationGracePeriodSeconds"):
            render(chart, values)


def test_shutdown_grace_of_an_external_config_is_assumed_default(chart: helm_python.Chart) -> None:
    gateway = copy.deepcopy(chart.values["config"]["gateway"])
    gateway["server"] = {"shutdown_grace": "10m"}  # ignored: the external ConfigMap is used
    values = {"config": {"existingConfigMap": "cm", "gateway": gateway}}
    assert pod_spec(render(chart, values))["terminationGracePeriodSeconds"] == 45


def test_checksum_config_only_with_rollout(chart: helm_python.Chart) -> None:
    hot = deployment(render(chart))["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("checksum/config") for k in hot)
    rollout = deployment(render(chart, SCENARIOS["rollout"]))["spec"]["template"]["metadata"]["annotations"]
    checksum = rollout["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    # unrelated values keep it, a config change changes it
    same = render(chart, {"config": {"reloadStrategy": "rollout"}, "replicaCount": 3})
    assert deployment(same)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == checksum
    gateway = copy.deepcopy(chart.values["config"]["gateway"])
    gateway["providers"][0]["models"] = ["echo", "echo2"]
    changed = render(chart, {"config": {"reloadStrategy": "rollout", "gateway": gateway}})
    assert deployment(changed)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_rollout_with_existing_configmap_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmError, match="rollout"):
        render(chart, {"config": {"reloadStrategy": "rollout", "existingConfigMap": "x"}})


def test_empty_config_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmError, match=r"config\.gateway"):
        render(chart, {"config": {"gateway": ""}})


def test_ingress(chart: helm_python.Chart) -> None:
    ingress = only(render(chart, SCENARIOS["ingress"]), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_hpa_takes_over_replicas(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["hpa"])
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    assert "replicas" not in deployment(docs)["spec"]
    assert deployment(render(chart))["spec"]["replicas"] == 1


def test_pod_disruption_budget(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["pdb"])
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment(docs)["spec"]["selector"]["matchLabels"]
    pdb = only(render(chart, SCENARIOS["pdbMaxUnavailable"]), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def test_network_policy(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["networkPolicy"])
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment(docs)["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    assert policy["spec"]["egress"] == [{}]

    docs = render(chart, SCENARIOS["networkPolicyRestricted"])
    policy = only(docs, "NetworkPolicy")
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    test_pod = only(docs, "Pod")
    assert peers[1]["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
    egress = policy["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert egress[1]["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_helm_test_pod(chart: helm_python.Chart) -> None:
    docs = render(chart)
    pod = only(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (test_container,) = pod["spec"]["containers"]
    assert test_container["image"] == container(docs)["image"]
    assert test_container["command"][:2] == ["python", "-c"]
    script = test_container["command"][2]
    assert "/healthz" in script and "urllib.request" in script
    assert f"{FULLNAME}.{NAMESPACE}.svc:8050" in script
    compile(script, "test-connection", "exec")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert test_container["securityContext"]["readOnlyRootFilesystem"] is True
    # the test pod must not be taken for a gateway pod
    selector = only(docs, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    assert "Pod" not in kinds(render(chart, {"tests": {"enabled": False}}))


def test_image_reference(chart: helm_python.Chart) -> None:
    assert container(render(chart))["image"] == "vte-proxy:0.1.0"
    assert container(render(chart, {"image": {"tag": "1.2.3"}}))["image"] == "vte-proxy:1.2.3"
    image = container(render(chart, SCENARIOS["imageDigest"]))["image"]
    assert image == "registry.example/vte-proxy@sha256:" + "a" * 64


# --------------------------------------------------------------------------- monitoring


def test_monitoring_is_off_by_default(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(docs))
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"] == [FULLNAME]


def test_service_monitor(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["serviceMonitor"])
    monitor = only(docs, "ServiceMonitor")
    validate_service_monitor(monitor, only(docs, "Service"))
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert "authorization" not in endpoint
    # The gateway's own `endpoint` label (chat/completions, ...) must survive the scrape: with
    # honorLabels false the operator renames it exported_endpoint and sets endpoint="http".
    assert endpoint["honorLabels"] is True

    monitor = only(render(chart, SCENARIOS["serviceMonitorAuth"]), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "metrics-key", "key": "key"},
    }


ALERTS = {
    "VteProxyConfigReloadFailing",
    "VteProxyUpstreamErrorRate",
    "VteProxyHighLatencyP95",
    "VteProxyNoSuccessfulRequests",
}


def test_prometheus_rule_alerts(chart: helm_python.Chart) -> None:
    rule = only(render(chart, SCENARIOS["prometheusRule"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = validate_prometheus_rule(rule)
    assert set(alerts) == ALERTS
    selector = f'job="{FULLNAME}", namespace="{NAMESPACE}"'
    for alert in alerts.values():
        check_promql(alert["expr"])
        assert selector in alert["expr"], alert["expr"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]

    reload_expr = alerts["VteProxyConfigReloadFailing"]["expr"]
    assert check_promql(reload_expr) == {"vte_config_reloads_total"}
    assert 'result="failure"' in reload_expr and 'result="success"' in reload_expr
    assert "unless" in reload_expr and "[10m]" in reload_expr
    # a process's first failure creates the series at 1, which increase() cannot see
    assert "offset 10m" in reload_expr

    error_expr = alerts["VteProxyUpstreamErrorRate"]["expr"]
    assert check_promql(error_expr) == {"vte_upstream_errors_total", "vte_requests_total"}
    assert "by (namespace, job, provider)" in error_expr and "> 0.05" in error_expr

    latency_expr = alerts["VteProxyHighLatencyP95"]["expr"]
    assert check_promql(latency_expr) == {"vte_request_duration_seconds_bucket"}
    assert latency_expr.startswith("histogram_quantile(0.95, sum by (le, model) (rate(")
    assert "> 60" in latency_expr

    none_expr = alerts["VteProxyNoSuccessfulRequests"]["expr"]
    assert check_promql(none_expr) == {"vte_requests_total"}
    assert 'code=~"2.."' in none_expr and "[15m]" in none_expr
    assert alerts["VteProxyNoSuccessfulRequests"]["labels"]["severity"] == "critical"


def test_prometheus_rule_thresholds_and_switches_come_from_values(chart: helm_python.Chart) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "namespace": "monitoring",
            "selector": 'app="vte"',
            "additionalAlertLabels": {"team": "platform"},
            "alerts": {
                "upstreamErrorRate": {"threshold": 0.2, "for": "3m", "severity": "critical"},
                "highLatencyP95": {"thresholdSeconds": 12.5},
                "noSuccessfulRequests": {"enabled": False},
            },
            "additionalRules": [{"record": "vte:requests:rate5m", "expr": "sum(rate(vte_requests_total[5m]))"}],
        }
    }
    chart.validate_schema(values)
    rule = only(render(chart, values), "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    alerts = validate_prometheus_rule(rule)
    assert set(alerts) == ALERTS - {"VteProxyNoSuccessfulRequests"}
    error = alerts["VteProxyUpstreamErrorRate"]
    assert "> 0.2" in error["expr"] and error["for"] == "3m" and error["labels"]["severity"] == "critical"
    assert "> 12.5" in alerts["VteProxyHighLatencyP95"]["expr"]
    assert all('app="vte"' in a["expr"] for a in alerts.values())
    assert all(a["labels"]["team"] == "platform" for a in alerts.values())
    records = [r for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert records == values["prometheusRule"]["additionalRules"]


def test_prometheus_rule_with_nothing_to_alert_renders_nothing(chart: helm_python.Chart) -> None:
    off = {"enabled": False}
    alerts = {name: off for name in chart.values["prometheusRule"]["alerts"]}
    docs = render(chart, {"prometheusRule": {"enabled": True, "alerts": alerts}})
    assert "PrometheusRule" not in kinds(docs)


def test_dashboard_configmap(chart: helm_python.Chart) -> None:
    docs = render(chart, SCENARIOS["dashboard"])
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = configmap["data"].values()
    dashboard = json.loads(content)
    assert dashboard == json.loads((REPO / "dashboards" / "vte-proxy.json").read_text())
    assert dashboard["uid"] == "vte-proxy"

    values = {
        "dashboard": {
            "enabled": True,
            "namespace": "grafana",
            "labelName": "grafana.example/dashboard",
            "labelValue": "vte",
            "annotations": {"grafana_folder": "LLM"},
        }
    }
    chart.validate_schema(values)
    (configmap,) = [
        d for d in render(chart, values) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana.example/dashboard"] == "vte"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "LLM"}


# --------------------------------------------------------------------------- values file


def _values_lines() -> list[str]:
    return (CHART_DIR / "values.yaml").read_text().splitlines()


KEY_LINE = re.compile(r"^(?P<indent> *)(?:- )?(?P<key>[A-Za-z_][A-Za-z0-9_.\-/]*):(?: |$)")


def test_every_values_key_is_commented() -> None:
    lines = _values_lines()
    missing = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        trailing_comment = " #" in line.split(":", 1)[1]
        previous = lines[number - 1].strip() if number else ""
        if not (trailing_comment or previous.startswith("#")):
            missing.append(f"{number + 1}: {line}")
    assert missing == [], "values.yaml keys without a comment:\n" + "\n".join(missing)


def _value_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of values.yaml mappings down to leaves (config.gateway is gateway.yaml
    itself, free-form maps such as annotations are leaves)."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path == "config.gateway" or not isinstance(value, dict) or not value:
            yield path
        else:
            yield from _value_paths(value, path + ".")


def test_no_dead_values(chart: helm_python.Chart) -> None:
    sources = "\n".join(t["data"] for t in chart.templates)
    referenced = set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", sources))
    dead = []
    for path in _value_paths(chart.values):
        parts = path.split(".")
        # used when the path or one of its parents is referenced as a whole
        if not any(".".join(parts[:i]) in referenced for i in range(1, len(parts) + 1)):
            dead.append(path)
    assert dead == [], f"values never used by a template: {dead}"


def test_schema_covers_values_and_rejects_mistakes(chart: helm_python.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    assert set(chart.values) <= set(schema["properties"])
    chart.validate_schema({})
    for bad in (
        {"config": {"reloadStrategy": "sometimes"}},
        {"logging": {"format": "xml"}},
        {"replicaCount": -1},
        {"secretEnv": {"not-an-env-name": "x"}},
        {"serviceMonitor": {"interval": "soon"}},
        {"image": {"digest": "latest"}},
        {"unknownTopLevelKey": True},
    ):
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(bad)


# --------------------------------------------------------------------------- the gateway accepts it


def test_rendered_gateway_config_passes_vte_proxy_check(chart: helm_python.Chart, tmp_path: Path) -> None:
    """The chart's default gateway.yaml is a valid vte-proxy config (`vte-proxy check`)."""
    config_text = only(render(chart), "ConfigMap")["data"]["gateway.yaml"]
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(config_text)
    env = {**os.environ, "VTE_DEMO_KEY": "demo-key-for-check"}
    result = subprocess.run(
        [sys.executable, "-m", "vte_proxy", "check", str(config_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_packaged_chart_keeps_the_dashboard(chart: helm_python.Chart, tmp_path: Path) -> None:
    """`helm package` output (what a chart repository serves) still renders the dashboard."""
    archive = helm_python.package(CHART_DIR, destination=tmp_path)
    packaged = helm_python.Chart.load(archive)
    try:
        assert packaged.version == chart.version
        names = {f["name"] for f in packaged.files}
        assert "dashboards/vte-proxy.json" in names
        docs = render(packaged, {"dashboard": {"enabled": True}})
        (configmap,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
        assert json.loads(next(iter(configmap["data"].values())))["uid"] == "vte-proxy"
    finally:
        packaged.close()


# --------------------------------------------------------------------------- limits store, Claude Code notes


def env_of(docs: list[Doc]) -> dict[str, Doc]:
    return {e["name"]: e for e in container(docs).get("env", [])}


def gateway_of(docs: list[Doc]) -> Doc:
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and "gateway.yaml" in d["data"]]
    loaded: Doc = yaml.safe_load(configmap["data"]["gateway.yaml"])
    return loaded


def notes(chart: helm_python.Chart, values: dict[str, Any] | None = None) -> str:
    return next(t for p, t in render_raw(chart, values).items() if p.endswith("NOTES.txt"))


def test_memory_store_by_default(chart: helm_python.Chart) -> None:
    docs = render(chart)
    assert "REDIS_URL" not in env_of(docs)
    assert "limits" not in gateway_of(docs)


def test_redis_store_takes_its_url_from_an_existing_secret(chart: helm_python.Chart) -> None:
    values = {"limits": {"store": "redis", "redis": {"existingSecret": "vte-redis", "existingSecretKey": "url",
                                                     "onError": "closed"}},
              "config": {"gateway": {**chart.values["config"]["gateway"], "limits": {"rpm": 100}}}}
    docs = render(chart, values)
    assert env_of(docs)["REDIS_URL"] == {"name": "REDIS_URL",
                                         "valueFrom": {"secretKeyRef": {"name": "vte-redis", "key": "url"}}}
    # the gateway's own limits are kept; the store and the URL reference are added
    assert gateway_of(docs)["limits"] == {"rpm": 100, "store": "redis",
                                          "redis": {"url": "${REDIS_URL}", "on_error": "closed"}}
    assert "redis://" not in json.dumps(docs), "the URL (with its password) stays in the Secret"


def test_redis_store_needs_the_secret(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmError, match=r"limits\.redis\.existingSecret"):
        render(chart, {"limits": {"store": "redis"}})


def test_redis_store_with_a_string_config_must_reference_the_url(chart: helm_python.Chart) -> None:
    values = {"limits": {"store": "redis", "redis": {"existingSecret": "r"}}, **SCENARIOS["stringConfig"]}
    with pytest.raises(helm_python.HelmError, match="REDIS_URL"):
        render(chart, values)
    text = values["config"]["gateway"] + 'limits: {store: redis, redis: {url: "${REDIS_URL}"}}\n'
    docs = render(chart, {**values, "config": {"gateway": text}})
    assert gateway_of(docs)["limits"]["redis"]["url"] == "${REDIS_URL}"
    assert "REDIS_URL" in env_of(docs)


def test_rendered_redis_config_passes_vte_proxy_check(chart: helm_python.Chart, tmp_path: Path) -> None:
    """With limits.store=redis the gateway accepts the limits block the chart adds."""
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(gateway_of(render(chart, SCENARIOS["redisLimits"]))))
    env = {**os.environ, "VTE_DEMO_KEY": "demo-key-for-check", "REDIS_URL": "redis://:Sup3rSecretPW@redis-master:6379/0"}
    result = subprocess.run([sys.executable, "-m", "vte_proxy", "check", str(config_file)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Sup3rSecretPW" not in result.stdout + result.stderr


def test_schema_knows_the_limits_store(chart: helm_python.Chart) -> None:
    for bad in ({"limits": {"store": "etcd"}}, {"limits": {"redis": {"onError": "maybe"}}},
                {"limits": {"redis": {"url": "redis://x"}}}):
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(bad)


def test_notes_warn_about_per_pod_limits_with_replicas(chart: helm_python.Chart) -> None:
    assert "N times" not in notes(chart)
    assert "N times" in notes(chart, {"replicaCount": 3})
    assert "N times" in notes(chart, {"autoscaling": {"enabled": True}})
    assert "N times" not in notes(chart, {"replicaCount": 3, **SCENARIOS["redisLimits"]})


def test_notes_tell_how_to_point_claude_code_at_the_gateway(chart: helm_python.Chart) -> None:
    text = notes(chart)
    assert f"export ANTHROPIC_BASE_URL=http://{FULLNAME}.{NAMESPACE}.svc:8050\n" in text
    assert "export ANTHROPIC_AUTH_TOKEN=<client key>" in text
    assert "export ANTHROPIC_BASE_URL=https://llm.example.com\n" in notes(chart, SCENARIOS["ingress"])


def test_three_replicas_redis_example(chart: helm_python.Chart) -> None:
    values = SCENARIOS["threeReplicasRedisExample"]
    docs = render(chart, values)
    assert deployment(docs)["spec"]["replicas"] == 3
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert env_of(docs)["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "vte-proxy-redis", "key": "redis-url"}
    gateway = gateway_of(docs)
    assert gateway["limits"]["store"] == "redis" and gateway["limits"]["redis"]["url"] == "${REDIS_URL}"
    assert all("limits" in key and "budget" in key for key in gateway["keys"])
    assert {p["type"] for p in gateway["providers"]} == {"openai", "anthropic"}
    assert {"ServiceMonitor", "PrometheusRule", "Ingress"} <= set(kinds(docs))


def test_three_replicas_redis_example_passes_vte_proxy_check(chart: helm_python.Chart, tmp_path: Path) -> None:
    """The example's gateway.yaml (limits, budgets, prices, an anthropic provider, Redis) is valid."""
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(gateway_of(render(chart, SCENARIOS["threeReplicasRedisExample"]))))
    secrets = {name: f"value-of-{name.lower()}" for name in
               ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TEAM_A_KEY", "CLAUDE_CODE_KEY")}
    env = {**os.environ, **secrets, "REDIS_URL": "redis://:Sup3rSecretPW@redis-master.llm.svc:6379/0"}
    result = subprocess.run([sys.executable, "-m", "vte_proxy", "check", str(config_file)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "claude/claude-sonnet-4-5" in result.stdout
    assert not any(secret in result.stdout + result.stderr for secret in [*secrets.values(), "Sup3rSecretPW"])
