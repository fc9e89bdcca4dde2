"""The test control plane itself behaves like a cluster: the controllers, the scheduler, kwok's
fake kubelet, CRD schemas and RBAC all do their real work. The operator and chart suites build
on exactly these behaviours, so a regression here points at the environment, not at them."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.k8s.cluster import FAKE_NODES, POD_CIDR, ControlPlane, KubectlError

pytestmark = pytest.mark.k8s


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = control_plane.create_namespace(f"cp-{uuid.uuid4().hex[:8]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Polls until ``check()`` is truthy and returns it; controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def items(cp: ControlPlane, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(cp.kubectl("get", *args, "-o", "json").stdout)["items"]
    return found


def deployment(name: str, replicas: int = 1) -> str:
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": "konfer/sfu:test",
                                "ports": [{"containerPort": 8080}],
                            }
                        ]
                    },
                },
            },
        }
    )


def job(name: str, pod_annotations: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": pod_annotations or {}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "konfer/recorder:test"}],
                    },
                },
            },
        }
    )


def test_server_reports_the_pinned_kubernetes_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == control_plane.kubernetes_version
    assert version["serverVersion"]["gitVersion"].startswith("v1.32.")
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == ("1", "32")
    assert version["clientVersion"]["gitVersion"] == control_plane.kubernetes_version


def test_only_the_kwok_fake_nodes_exist_and_are_ready(control_plane: ControlPlane) -> None:
    nodes = items(control_plane, "nodes")
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(FAKE_NODES)
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert node["status"]["allocatable"]["pods"] == "110"


def test_deployment_pod_is_scheduled_on_a_fake_node_and_runs_ready(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", replicas=2))
    cp.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=60s"
    )
    pods = items(cp, "pods", "-n", namespace, "-l", "app=web")
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in FAKE_NODES  # bound by kube-scheduler
        assert pod["status"]["phase"] == "Running"  # by kwok
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["Ready"] == "True"
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
        # The ServiceAccount admission plugin and the token controller did their part.
        assert pod["spec"]["serviceAccountName"] == "default"


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("gc"))
    cp.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/gc", "--timeout=60s"
    )
    (replicaset,) = items(cp, "replicasets", "-n", namespace, "-l", "app=gc")
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    (pod,) = items(cp, "pods", "-n", namespace, "-l", "app=gc")
    assert pod["metadata"]["ownerReferences"][0]["name"] == replicaset["metadata"]["name"]

    # Background cascade: the api deletes only the Deployment; the rest is the GC's work.
    cp.kubectl("delete", "-n", namespace, "deployment/gc", "--cascade=background")
    eventually(
        lambda: not items(cp, "replicasets,pods", "-n", namespace, "-l", "app=gc"),
        what="garbage collection of the ReplicaSet and its pods",
    )


def test_job_pod_completes_and_the_job_reaches_complete(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=job("done"))
    cp.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/done", "--timeout=60s")
    (pod,) = items(cp, "pods", "-n", namespace, "-l", "job-name=done")
    assert pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert (
        json.loads(cp.kubectl("get", "-n", namespace, "job/done", "-o", "json").stdout)["status"][
            "succeeded"
        ]
        == 1
    )


def test_job_pod_annotated_to_fail_fails_the_job_with_its_termination_message(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    annotations = {"pod-fail.stage.kwok.x-k8s.io/message": "storage unreachable"}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=job("broken", annotations))
    cp.kubectl("wait", "-n", namespace, "--for=condition=Failed", "job/broken", "--timeout=60s")
    (pod,) = items(cp, "pods", "-n", namespace, "-l", "job-name=broken")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (1, "storage unreachable")


def test_job_pod_with_a_completion_delay_keeps_running(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    annotations = {"pod-complete.stage.kwok.x-k8s.io/delay": "1h"}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=job("long", annotations))
    cp.kubectl(
        "wait", "-n", namespace, "--for=jsonpath={.status.ready}=1", "job/long", "--timeout=60s"
    )
    time.sleep(1)
    (pod,) = items(cp, "pods", "-n", namespace, "-l", "job-name=long")
    assert pod["status"]["phase"] == "Running"


def inference_service(name: str, predictor: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": name,
                "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
            },
            "spec": {"predictor": predictor},
        }
    )


def test_kserve_inferenceservice_crd_validates_objects_server_side(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    valid = {
        "minReplicas": 1,
        "containers": [
            {
                "name": "kserve-container",
                "image": "konfer/model-server:test",
                "args": ["model-server", "--name", "whisper"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            }
        ],
    }
    cp.kubectl("create", "-n", namespace, "-f", "-", input=inference_service("ok", valid))
    stored = json.loads(cp.kubectl("get", "-n", namespace, "isvc/ok", "-o", "json").stdout)
    assert stored["spec"]["predictor"]["containers"][0]["image"] == "konfer/model-server:test"

    invalid = {**valid, "minReplicas": "two"}
    with pytest.raises(KubectlError) as rejected:
        cp.kubectl("create", "-n", namespace, "-f", "-", input=inference_service("bad", invalid))
    assert "minReplicas" in rejected.value.stderr
    assert "Invalid value" in rejected.value.stderr
    # Server-side field validation also refuses fields the schema does not know.
    unknown = {**valid, "replicasPlease": 3}
    with pytest.raises(KubectlError) as strict:
        cp.kubectl(
            "create", "--validate=strict", "-n", namespace, "-f", "-",
            input=inference_service("odd", unknown),
        )  # fmt: skip
    assert "replicasPlease" in strict.value.stderr
    names = [i["metadata"]["name"] for i in items(cp, "inferenceservices", "-n", namespace)]
    assert names == ["ok"]


def test_non_admin_user_is_denied_until_rbac_grants_access(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane
    alice = cp.user_kubeconfig("alice", ["konfer-testers"])
    with pytest.raises(KubectlError) as denied:
        cp.kubectl("get", "pods", "-n", namespace, kubeconfig=alice)
    assert "Forbidden" in denied.value.stderr
    assert 'User "alice"' in denied.value.stderr

    cp.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=get,list", "--resource=pods"
    )
    cp.kubectl(
        "create", "rolebinding", "testers-read-pods", "-n", namespace,
        "--role=pod-reader", "--group=konfer-testers",
    )  # fmt: skip
    # The binding is to the group carried in the certificate's O field.
    eventually(
        lambda: (
            cp.kubectl("get", "pods", "-n", namespace, kubeconfig=alice, check=False).returncode
            == 0
        ),
        what="RBAC to allow listing pods",
    )
    for verb, resource, ns in (
        ("get", "secrets", namespace),
        ("create", "pods", namespace),
        ("list", "pods", "default"),
    ):
        answer = cp.kubectl(
            "auth", "can-i", verb, resource, "-n", ns, kubeconfig=alice, check=False
        )
        assert answer.stdout.strip() == "no", (verb, resource, ns)
