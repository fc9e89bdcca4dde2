"""The Helm chart (charts/konfer): lint, render for Kubernetes 1.32, validate every object on
the test API server, install it, and reconcile a Meeting under exactly the chart's RBAC.

kwok marks the chart's pods Running without running containers, so the operator the chart
installs cannot reconcile anything here; the last test runs the operator process locally
with the installed Deployment's arguments and environment and the token of the chart's
operator ServiceAccount, which is what the pod would have.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import (
    CHART,
    KUBE_VERSION,
    ROOT,
    VALUES_FILES,
    by_kind,
    helm,
    monitoring_crds,
    one,
    prometheus_rule_groups,
    promtool_binary,
    template,
    values_args,
    workloads,
)
from tests.k8s.cluster import ControlPlane, free_port

pytestmark = pytest.mark.k8s

PROFILES = list(VALUES_FILES)
# The installed release has its own name, so its cluster-scoped objects (the operator's
# ClusterRole) never collide with other tests' objects on the shared control plane.
RELEASE = "konfer-chart"
OPERATOR_RBAC = ROOT / "operator" / "rbac" / "operator.yaml"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


# --- lint and render ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_chart_lints_clean_with_each_values_file(profile: str) -> None:
    done = helm(
        "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *values_args(profile)
    )
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_chart_renders_the_platform_for_kubernetes_1_32(profile: str) -> None:
    objects = template(profile)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role"} <= kinds
    names = {o["metadata"]["name"] for o in by_kind(objects, "Deployment")}
    assert {"konfer-api", "konfer-operator", "konfer-worker"} <= names
    crds = {o["metadata"]["name"] for o in by_kind(objects, "CustomResourceDefinition")}
    assert crds == {"meetings.konfer.io", "recordings.konfer.io", "inferencemodels.konfer.io"}
    if profile == "minimal":
        assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "PrometheusRule"} & kinds
        assert one(objects, "Deployment", "konfer-operator")["spec"]["replicas"] == 1
    else:
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
        monitored = {o["metadata"]["name"] for o in by_kind(objects, "PodMonitor")}
        assert monitored == {"konfer-sfu", "konfer-model-server", "konfer-recorder"}
        assert one(objects, "Deployment", "konfer-operator")["spec"]["replicas"] == 2
    bundled = {o["metadata"]["name"] for o in by_kind(objects, "StatefulSet")}
    if profile == "production":
        assert bundled == set()  # managed PostgreSQL, Redis and S3
        assert by_kind(objects, "Ingress")
    else:
        assert bundled == {"konfer-postgresql", "konfer-redis", "konfer-minio"}


def test_chart_packages_with_the_repository_crds_and_operator_rbac_byte_for_byte(
    tmp_path: Path,
) -> None:
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("konfer-*.tgz")
    with tarfile.open(archive) as tar:
        packaged = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
        contents = {name: f.read() for name, f in packaged.items() if f is not None}
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        assert contents[f"konfer/crds/{crd.name}"] == crd.read_bytes()
    assert contents["konfer/files/operator-rbac.yaml"] == OPERATOR_RBAC.read_bytes()


def test_operator_roles_carry_exactly_the_operator_rbac_rules() -> None:
    source = {d["kind"]: d for d in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if d}
    objects = template()
    cluster_role = one(objects, "ClusterRole", "konfer-operator")
    assert cluster_role["rules"] == source["ClusterRole"]["rules"]
    lease_role = one(objects, "Role", "konfer-operator-leader-election")
    assert lease_role["rules"] == source["Role"]["rules"]
    # Watching its own namespace, the operator gets those rules there only.
    binding = one(objects, "RoleBinding", "konfer-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "konfer-operator",
    }
    assert not by_kind(objects, "ClusterRoleBinding")
    everywhere = template("default", ["operator.watchAllNamespaces=true"])
    assert (
        one(everywhere, "ClusterRoleBinding", "konfer-operator")["subjects"] == binding["subjects"]
    )


def test_api_role_is_least_privilege() -> None:
    """What konfer.api.runtime.kubernetes calls, the node views and recorder tokens need."""
    role = one(template(), "Role", "konfer-api")
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    crs = {
        ("konfer.io", r, v)
        for r in ("meetings", "recordings", "inferencemodels")
        for v in ("get", "list", "watch", "create", "patch")
    }
    meetings = {("konfer.io", "meetings", "delete"), ("konfer.io", "meetings/status", "patch")}
    meetings.add(("konfer.io", "inferencemodels", "delete"))  # a model the api loaded
    pods = {("", "pods", v) for v in ("get", "list", "watch")}
    # Live streams: created, suspended, and watched for streamers that never report.
    streamers = {("batch", "jobs", v) for v in ("get", "list", "watch", "create", "patch")}
    assert grants == crs | meetings | pods | streamers | {("", "secrets", "create")}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_konfer_container_is_non_root_read_only_without_capabilities(profile: str) -> None:
    for workload in workloads(template(profile)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where


def test_api_probes_answer_on_the_health_routes() -> None:
    api = one(template(), "Deployment", "konfer-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    env = {e["name"]: e for e in container["env"]}
    assert env["KONFER_RUNTIME"]["value"] == "kubernetes"
    assert env["KONFER_SIGNING_KEYS_DIR"]["value"] == "/etc/konfer/keys"
    for name in ("KONFER_DATABASE_URL", "KONFER_REDIS_URL", "KONFER_S3_SECRET_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    # TURN: the api mints REST credentials from the same secret coturn verifies them with.
    turn_secret = env["KONFER_TURN_SECRET"]["valueFrom"]["secretKeyRef"]
    coturn = one(template(), "Deployment", "konfer-turn")["spec"]["template"]["spec"]
    coturn_env = {e["name"]: e for e in coturn["containers"][0]["env"]}
    assert coturn_env["TURN_SECRET"]["valueFrom"]["secretKeyRef"] == turn_secret
    args = coturn["containers"][0]["args"]
    assert "--min-port=49160" in args
    assert "--max-port=49200" in args
    assert "turn:turn.example.com:3478?transport=udp" in env["KONFER_TURN_URLS"]["value"]


def test_generated_signing_key_is_an_ed25519_key_the_api_loads(tmp_path: Path) -> None:
    from konfer.core.keys import KeyRing

    secret = one(template(), "Secret", "konfer-signing-keys")
    for name, data in secret["data"].items():
        (tmp_path / name).write_bytes(base64.b64decode(data))
    ring = KeyRing.load(tmp_path, None, generate=False)
    assert ring.active.kid == next(iter(secret["data"])).removesuffix(".pem")
    assert ring.jwks()["keys"][0]["crv"] == "Ed25519"


def test_existing_secrets_replace_the_generated_ones() -> None:
    objects = template(
        "default",
        [
            "signingKeys.existingSecret=my-keys",
            "postgresql.auth.existingSecret=my-db",
            "minio.auth.existingSecret=my-s3",
            "operator.mediaEnvSecret=my-media-env",
        ],
    )
    secrets = {o["metadata"]["name"] for o in by_kind(objects, "Secret")}
    assert not {"konfer-signing-keys", "konfer-postgresql", "konfer-minio"} & secrets
    api = one(objects, "Deployment", "konfer-api")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in api["containers"][0]["env"]}
    assert env["KONFER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "my-db"
    assert env["KONFER_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-s3"
    keys = next(v for v in api["volumes"] if v["name"] == "signing-keys")
    assert keys["secret"]["secretName"] == "my-keys"


def test_sfu_host_network_is_an_operator_setting() -> None:
    objects = template("default", ["operator.sfu.hostNetwork=true"])
    operator = one(objects, "Deployment", "konfer-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["KONFER_OPERATOR_SFU_HOST_NETWORK"] == "true"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("api.replicas=0", "/api/replicas"),
        ("config.env=staging", "/config/env"),
        ("turn.minPort=80", "/turn/minPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("minio.bucket=Bad_Bucket", "/minio/bucket"),
        ("api.autoscaling.targetCPUUtilizationPercentage=150", "targetCPUUtilizationPercentage"),
        ("monitoring.rules.errorRateThreshold=5", "errorRateThreshold"),
        ("config.extra.NOT_KONFER=1", "NOT_KONFER"),
        ("externalDatabase.url=mysql://x", "/externalDatabase/url"),
        ("unknownTopLevel=1", "unknownTopLevel"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    for command in ("template", "lint"):
        args = [command, *(["konfer"] if command == "template" else []), str(CHART)]
        done = helm(*args, "--set", setting, check=False)
        assert done.returncode != 0, f"helm {command} accepted {setting}"
        assert complaint in done.stdout + done.stderr


def test_external_services_without_credentials_are_refused() -> None:
    done = helm("template", "konfer", str(CHART), "--set", "postgresql.enabled=false", check=False)
    assert done.returncode != 0
    assert "externalDatabase.url or externalDatabase.existingSecret is required" in done.stderr


# --- alert rules and dashboard --------------------------------------------------------------


def test_prometheus_rules_parse_with_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rule_groups(template())))
    done = subprocess.run(
        [str(promtool_binary()), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout
    alerts = {
        r["alert"]: r["for"]
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
    }
    assert alerts == {
        "ServiceDown": "1m",
        "HighCPUUsage": "5m",
        "HighMemoryUsage": "5m",
        "HighErrorRate": "2m",
        "SlowResponseTime": "3m",
    }


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {"konfer_release": "konfer", **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def test_alerts_fire_after_their_thresholds_hold_for_their_durations(tmp_path: Path) -> None:
    """promtool's rule unit tests on synthetic series (30 s scrapes): each alert is silent
    before its threshold has held for its ``for`` and firing after; healthy series never fire."""
    groups = prometheus_rule_groups(template())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # templated with $value: checked by `promtool check rules`
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    pod = {"namespace": "konfer", "pod": "api-1", "konfer_component": "api"}
    calm = {"namespace": "konfer", "pod": "api-2", "konfer_component": "api"}
    sfu = {"namespace": "konfer", "pod": "sfu-1", "konfer_component": "sfu"}
    buckets = [
        _series("http_request_duration_seconds_bucket", {**pod, "le": le}, values)
        for le, values in (("1", "0x20"), ("2.5", "0x20"), ("5", "0+10x20"), ("+Inf", "0+10x20"))
    ]
    ns = {"namespace": "konfer"}

    def alert(name: str, at: str, labels: dict[str, str] | None) -> dict[str, Any]:
        expected = [] if labels is None else [{"exp_labels": labels}]
        return {"eval_time": at, "alertname": name, "exp_alerts": expected}

    severity = {"ServiceDown": "critical", "HighErrorRate": "critical"}
    firing = {
        "ServiceDown": {**pod, "instance": "10.0.0.1:8000", "konfer_release": "konfer"},
        "HighCPUUsage": sfu,
        "HighMemoryUsage": pod,
        "HighErrorRate": ns,
        "SlowResponseTime": ns,
    }
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": [
                    # up 2 min, then down: ServiceDown after 1 more minute.
                    _series("up", {**pod, "instance": "10.0.0.1:8000"}, "1x4 0x20"),
                    _series("up", {**calm, "instance": "10.0.0.2:8000"}, "1x24"),
                    # SFU at 0.9 of a core, another process at 0.5.
                    _series("konfer_sfu_cpu_seconds_total", sfu, "0+27x30"),
                    _series("process_cpu_seconds_total", calm, "0+15x30"),
                    # 3 GB resident against 1 GB.
                    _series("process_resident_memory_bytes", pod, "3e9x30"),
                    _series("process_resident_memory_bytes", calm, "1e9x30"),
                    # 10 of 110 requests a scrape fail: 9 %.
                    _series("http_requests_total", {**pod, "status_code": "200"}, "0+100x20"),
                    _series("http_requests_total", {**pod, "status_code": "500"}, "0+10x20"),
                    # every request takes 2.5-5 s: p95 ≈ 4.9 s.
                    *buckets,
                ],
                "alert_rule_test": [
                    alert("ServiceDown", "2m30s", None),
                    alert("ServiceDown", "4m", firing["ServiceDown"]),
                    alert("HighCPUUsage", "4m", None),
                    alert("HighCPUUsage", "7m", firing["HighCPUUsage"]),
                    alert("HighMemoryUsage", "4m", None),
                    alert("HighMemoryUsage", "6m", firing["HighMemoryUsage"]),
                    alert("HighErrorRate", "1m30s", None),
                    alert("HighErrorRate", "4m", firing["HighErrorRate"]),
                    alert("SlowResponseTime", "2m30s", None),
                    alert("SlowResponseTime", "5m", firing["SlowResponseTime"]),
                ],
            }
        ],
    }
    for case in tests["tests"][0]["alert_rule_test"]:  # type: ignore[index]
        for exp in case["exp_alerts"]:
            exp["exp_labels"] = {
                **exp["exp_labels"],
                "severity": severity.get(case["alertname"], "warning"),
            }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [str(promtool_binary()), "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    configmap = one(template(), "ConfigMap", "konfer-dashboard")
    dashboard = json.loads(configmap["data"]["konfer.json"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("meetings", "participants", "sfu", "latency", "error", "recording", "inference"):
        assert topic in titles, topic
    rules = [
        {
            "record": f"konfer:dashboard:{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$release", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]})
    )
    done = subprocess.run(
        [str(promtool_binary()), "check", "rules", str(tmp_path / "dashboard.yaml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- against the API server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_api(control_plane: ControlPlane) -> ControlPlane:
    """The Prometheus Operator's CRDs, so monitoring objects are validated by their schema."""
    args = [a for crd in monitoring_crds() for a in ("-f", str(crd))]
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", *args)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    )  # fmt: skip
    return control_plane


def restricted_namespace(cp: ControlPlane, prefix: str) -> str:
    """A namespace that enforces the "restricted" Pod Security Standard."""
    name = cp.create_namespace(f"{prefix}-{uuid.uuid4().hex[:6]}")
    for mode in ("enforce", "warn"):
        cp.kubectl("label", "namespace", name, f"pod-security.kubernetes.io/{mode}=restricted")
    return name


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_object_passes_server_side_validation(
    monitoring_api: ControlPlane, profile: str
) -> None:
    cp = monitoring_api
    ns = restricted_namespace(cp, f"dry-{profile}")
    objects = template(profile, namespace=ns)
    assert by_kind(objects, "PrometheusRule") or profile == "minimal"
    # Workloads one by one, so each Pod Security warning names its workload.
    batches = [[o for o in objects if o not in workloads(objects)]]
    batches += [[w] for w in workloads(objects)]
    warned: dict[str, list[str]] = {}
    applied = 0
    for batch in batches:
        manifest = "\n---\n".join(yaml.safe_dump(o) for o in batch)
        done = cp.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-", input=manifest
        )
        applied += sum("(server dry run)" in line for line in done.stdout.splitlines())
        warnings = [line for line in done.stderr.splitlines() if "PodSecurity" in line]
        if warnings:
            warned[batch[0]["metadata"]["name"]] = warnings
    assert applied == len(objects)
    # Pod Security "restricted": only coturn on the node's network may break it (production).
    assert set(warned) == ({"konfer-turn"} if profile == "production" else set()), warned


@pytest.fixture(scope="module")
def installed(monitoring_api: ControlPlane) -> Iterator[tuple[ControlPlane, str]]:
    """The chart installed with default values into a "restricted" namespace."""
    cp = monitoring_api
    ns = restricted_namespace(cp, "chart")
    helm(
        "install", RELEASE, str(CHART), "--namespace", ns, "--kubeconfig", str(cp.kubeconfig),
        "--timeout", "2m",
        env=cp.env, timeout=180,
    )  # fmt: skip
    try:
        yield cp, ns
    finally:
        helm("uninstall", RELEASE, "--namespace", ns, "--kubeconfig", str(cp.kubeconfig),
             env=cp.env, check=False)  # fmt: skip
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _ready_pods(cp: ControlPlane, ns: str, component: str) -> list[dict[str, Any]]:
    pods = cp.kubectl_json(
        "get", "pods", "-n", ns, "-l", f"app.kubernetes.io/component={component}"
    )
    items: list[dict[str, Any]] = pods["items"]  # type: ignore[assignment]
    return [
        p
        for p in items
        if p.get("status", {}).get("phase") == "Running"
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def test_helm_install_brings_up_the_operator_and_api_pods(
    installed: tuple[ControlPlane, str],
) -> None:
    cp, ns = installed
    wait_for("2 operator pods Ready", lambda: len(_ready_pods(cp, ns, "operator")) == 2, 90)
    wait_for("an api pod Ready", lambda: len(_ready_pods(cp, ns, "api")) >= 1, 90)
    wait_for("a worker pod Ready", lambda: len(_ready_pods(cp, ns, "worker")) == 1, 90)
    status = json.loads(
        helm(
            "status",
            RELEASE,
            "-n",
            ns,
            "--kubeconfig",
            str(cp.kubeconfig),
            "-o",
            "json",
            env=cp.env,
        ).stdout
    )
    assert status["info"]["status"] == "deployed"
    assert f"rollout status deployment/{RELEASE}-api" in status["info"]["notes"]
    # The monitoring CRDs are installed, so the notes do not warn about their absence.
    assert "no Prometheus Operator CRDs" not in status["info"]["notes"]
    # The monitoring API exists here, so the chart rendered its monitors and rules.
    assert cp.kubectl("get", "prometheusrule", RELEASE, "-n", ns).returncode == 0
    assert cp.kubectl("get", "servicemonitor", f"{RELEASE}-api", "-n", ns).returncode == 0
    # A second render (upgrade) keeps the generated credentials: lookup reads them back.
    before = cp.kubectl_json("get", "secret", f"{RELEASE}-minio", "-n", ns)["data"]
    helm("upgrade", RELEASE, str(CHART), "-n", ns, "--kubeconfig", str(cp.kubeconfig),
         "--reuse-values", env=cp.env, timeout=180)  # fmt: skip
    assert cp.kubectl_json("get", "secret", f"{RELEASE}-minio", "-n", ns)["data"] == before


def service_account_kubeconfig(cp: ControlPlane, ns: str, account: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", account, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "test", "user": account, "namespace": ns}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _container_env(deployment: dict[str, Any], ns: str, pod: str) -> dict[str, str]:
    """A container's environment as the kubelet would resolve it (fieldRefs only)."""
    env: dict[str, str] = {}
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"].get("fieldRef"):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.namespace": ns, "metadata.name": pod}[path]
    return env


@dataclass
class ChartOperator:
    """``konfer operator`` run with the installed Deployment's arguments and environment and
    the token of the chart's operator ServiceAccount."""

    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> None:
        assert self.proc.poll() is None, self.log.read_text()[-4000:]

    def assert_never_forbidden(self) -> None:
        text = self.log.read_text()
        assert "Forbidden" not in text, text[-4000:]
        assert " 403" not in text, text[-4000:]


@pytest.fixture(scope="module")
def chart_operator(
    installed: tuple[ControlPlane, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChartOperator]:
    cp, ns = installed
    workdir = tmp_path_factory.mktemp("chart-operator")
    deployment = cp.kubectl_json("get", "deployment", f"{RELEASE}-operator", "-n", ns)
    container = deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    kubeconfig = service_account_kubeconfig(
        cp, ns, f"{RELEASE}-operator", workdir / "operator.kubeconfig"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KONFER_")},
        **_container_env(deployment, ns, f"{RELEASE}-operator-local"),  # type: ignore[arg-type]
        "KONFER_KUBECONFIG": str(kubeconfig),
        "KONFER_DATA_DIR": str(workdir / "data"),
        "KONFER_OPERATOR_HEALTH_PORT": str(free_port()),
        "KONFER_OPERATOR_METRICS_PORT": str(free_port()),
        "KONFER_OPERATOR_RESYNC_SECONDS": "0.5",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("KUBECONFIG", None)  # only the ServiceAccount's credentials, never the admin's
    log = workdir / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "konfer.cli.main", *container["args"]],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield ChartOperator(proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _can_i(cp: ControlPlane, account: str, cases: list[tuple[str, str, str, str]]) -> None:
    for verb, resource, where, expected in cases:
        done = cp.kubectl(
            "auth", "can-i", verb, resource, "-n", where, "--as", account, check=False
        )
        assert done.stdout.strip() == expected, (verb, resource, where, done.stdout, done.stderr)


def _meeting_status(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    found = cp.kubectl("get", "meeting", name, "-n", ns, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(found.stdout).get("status") or {}
    return status


def test_meeting_is_reconciled_under_exactly_the_charts_operator_rbac(
    installed: tuple[ControlPlane, str], chart_operator: ChartOperator
) -> None:
    cp, ns = installed
    # The chart's bindings are all this account has: namespaced work yes, cluster admin no.
    _can_i(
        cp,
        f"system:serviceaccount:{ns}:{RELEASE}-operator",
        [
            ("patch", "meetings.konfer.io/status", ns, "yes"),
            ("create", "deployments.apps", ns, "yes"),
            ("update", "leases.coordination.k8s.io", ns, "yes"),
            ("create", "deployments.apps", "default", "no"),  # its own namespace only
            ("get", "secrets", ns, "no"),
            ("delete", "namespaces", ns, "no"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io", ns, "no"),
        ],
    )
    meeting = {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "Meeting",
        "metadata": {"name": "standup", "namespace": ns},
        "spec": {"title": "Stand-up", "maxParticipants": 8},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(meeting))

    def reconciled() -> bool:
        chart_operator.alive()
        status = _meeting_status(cp, ns, "standup")
        return bool(status.get("phase")) and status.get("observedGeneration") == 1

    wait_for("the Meeting's status from the operator", reconciled, 90)
    sfu = cp.kubectl_json("get", "deployments", "-n", ns, "-l", "app.kubernetes.io/component=sfu")
    (child,) = sfu["items"]  # type: ignore[misc]
    owner = child["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Meeting", "standup")
    wait_for(
        "the Meeting Running with its SFU ready",
        lambda: _meeting_status(cp, ns, "standup").get("phase") == "Running",
        90,
    )
    chart_operator.assert_never_forbidden()


async def test_the_api_runs_meetings_under_exactly_the_charts_api_rbac(
    installed: tuple[ControlPlane, str], chart_operator: ChartOperator, tmp_path: Path
) -> None:
    """The api's kubernetes runtime, with the chart's api ServiceAccount token, starts a
    meeting's SFU through the chart's operator, reports participants and ends it."""
    from konfer.api.runtime.kubernetes import KubernetesSfuRuntime, meeting_name
    from konfer.core.settings import Settings

    cp, ns = installed
    account = f"system:serviceaccount:{ns}:{RELEASE}-api"
    _can_i(
        cp,
        account,
        [
            ("create", "meetings.konfer.io", ns, "yes"),
            ("patch", "meetings.konfer.io/status", ns, "yes"),
            ("list", "pods", ns, "yes"),
            ("create", "secrets", ns, "yes"),
            ("get", "secrets", ns, "no"),
            ("create", "deployments.apps", ns, "no"),
            ("create", "meetings.konfer.io", "default", "no"),
        ],
    )
    kubeconfig = service_account_kubeconfig(cp, ns, f"{RELEASE}-api", tmp_path / "api.kubeconfig")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        runtime="kubernetes",
        kubeconfig=kubeconfig,
        kubernetes_namespace=ns,
        kubernetes_sfu_ready_timeout_seconds=60,
    )

    async def participants(meeting_id: str) -> int:
        return 3

    runtime = KubernetesSfuRuntime(settings, count_participants=participants)
    meeting_id = str(uuid.uuid4())
    name = meeting_name(meeting_id)
    try:
        endpoint = await runtime.endpoint(meeting_id)
        assert endpoint.startswith("http://")
        assert f".{ns}.svc:" in endpoint
        runtime.peers_changed(meeting_id)
        deadline = time.monotonic() + 30
        while _meeting_status(cp, ns, name).get("participants") != 3:
            assert time.monotonic() < deadline, _meeting_status(cp, ns, name)
            await asyncio.sleep(0.2)
        await runtime.stop(meeting_id)
        deadline = time.monotonic() + 30
        while await runtime.read(meeting_id) is not None:  # the operator's finalizer runs
            assert time.monotonic() < deadline, _meeting_status(cp, ns, name)
            await asyncio.sleep(0.2)
    finally:
        await runtime.close()
    chart_operator.assert_never_forbidden()


def _tiltfile_constant(tree: ast.Module, name: str) -> ast.expr:
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    ]
    return value


def test_tiltfile_builds_every_image_and_its_dev_values_render() -> None:
    tree = ast.parse((ROOT / "Tiltfile").read_text())  # Starlark: a subset of Python
    images: dict[str, str] = ast.literal_eval(_tiltfile_constant(tree, "IMAGES"))
    assert {ref.removeprefix("konfer/") for ref in images} == {
        p.parent.name for p in (ROOT / "images").glob("*/Dockerfile")
    }
    for dockerfile in images.values():
        assert (ROOT / dockerfile).is_file()
    live: str = ast.literal_eval(_tiltfile_constant(tree, "LIVE"))
    dev = _tiltfile_constant(tree, "DEV_VALUES")
    assert isinstance(dev, ast.List)
    # Items are strings, or "key=" + LIVE.
    sets = [
        ast.literal_eval(e.left) + live if isinstance(e, ast.BinOp) else ast.literal_eval(e)
        for e in dev.elts
    ]
    objects = template("minimal", sets)
    api = one(objects, "Deployment", "konfer-api")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert env["PYTHONPATH"] == live
    assert any(m["mountPath"] == "/tmp" for m in api["containers"][0]["volumeMounts"])
