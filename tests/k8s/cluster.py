"""A kubelet-less Kubernetes control plane on loopback, for the tests/k8s suite and bench/.

tests/k8s/conftest.py starts one per test session (``start_control_plane``); bench/ and a
developer can run one by hand with ``python -m tests.k8s.cluster`` (prints its kubeconfig and
runs until Ctrl+C). Everything is real except the kubelet: Debian's etcd, and kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl built from k8s.io/kubernetes by
scripts/build-k8s.sh; kwok plays the kubelet on fake nodes (pods go Running/Ready, Job pods
Succeed — see kwok-stages.yaml). PKI is made with openssl; every server listens on 127.0.0.1
only, on free ports, with its data in one temporary folder that teardown removes. Each child
is started with PR_SET_PDEATHSIG, so a test run killed hard does not leave servers behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from konfer.core.process import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KWOK_STAGES = HERE / "kwok-stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
WORKDIR_PREFIX = "konfer-k8s-"


class ControlPlaneUnavailable(RuntimeError):
    """The binaries are not built (scripts/install-test-deps.sh has not run)."""


class ControlPlaneError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike CalledProcessError its message shows what kubectl said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def read_versions() -> dict[str, str]:
    """scripts/versions.env, the single place where the built versions are pinned."""
    versions: dict[str, str] = {}
    for line in (ROOT / "scripts" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value.strip().strip('"')
    return versions


def cache_dir() -> Path:
    """Where scripts/build-k8s.sh puts the binaries (same rule as the shell scripts)."""
    explicit = os.environ.get("KONFER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "konfer"


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path  # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
    etcd: Path
    kwok: Path
    helm: Path
    kserve_crd: Path
    kubernetes_version: str

    @classmethod
    def locate(cls) -> Binaries:
        """The cached build of the pinned versions; ControlPlaneUnavailable names what lacks."""
        v = read_versions()
        bin_root = cache_dir() / "bin"
        kserve_crd = cls.kserve_crd_path()
        k8s = bin_root / f"kubernetes-{v['KUBERNETES_VERSION']}"
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        found = cls(
            bin_dir=k8s,
            etcd=Path(etcd),
            kwok=bin_root / f"kwok-{v['KWOK_VERSION']}" / "kwok",
            helm=bin_root / f"helm-{v['HELM_VERSION']}" / "helm",
            kserve_crd=kserve_crd,
            kubernetes_version=v["KUBERNETES_VERSION"],
        )
        needed = [k8s / n for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
        needed += [k8s / "kubectl", found.etcd, found.kwok, found.helm, found.kserve_crd]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise ControlPlaneUnavailable(
                "Kubernetes test binaries missing (run scripts/install-test-deps.sh): "
                + ", ".join(missing)
            )
        return found

    @staticmethod
    def kserve_crd_path() -> Path:
        version = read_versions()["KSERVE_VERSION"]
        crd = "serving.kserve.io_inferenceservices.yaml"
        return cache_dir() / "bin" / f"kserve-{version}" / crd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


class Pki:
    """An EC (P-256) CA and certificates signed by it; EC keys cost milliseconds, RSA seconds."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key = directory / "ca.key"
        self.ca_crt = directory / "ca.crt"
        _openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-keyout", self.ca_key, "-out", self.ca_crt,
            "-days", "7", "-subj", "/CN=konfer-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip

    @classmethod
    def existing(cls, directory: Path) -> Pki:
        """A CA made elsewhere (kind's), to mint user certificates with."""
        pki = cls.__new__(cls)
        pki.dir = directory
        pki.ca_key = directory / "ca.key"
        pki.ca_crt = directory / "ca.crt"
        return pki

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server_sans: Sequence[str] = (),
    ) -> tuple[Path, Path]:
        """A leaf certificate: a client cert (CN = user, O = groups) unless SANs are given."""
        key, crt = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        subject = f"/CN={common_name}" + "".join(f"/O={o}" for o in organizations)
        usage = "serverAuth" if server_sans else "clientAuth"
        args: list[str | Path] = [
            "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-keyout", key, "-out", crt, "-days", "7",
            "-subj", subject, "-CA", self.ca_crt, "-CAkey", self.ca_key,
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext", f"extendedKeyUsage={usage}",
        ]  # fmt: skip
        if server_sans:
            args += ["-addext", "subjectAltName=" + ",".join(server_sans)]
        _openssl(*args)
        return key, crt

    def service_account_keys(self) -> tuple[Path, Path]:
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        _openssl("ec", "-in", key, "-pubout", "-out", pub)
        return key, pub


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """A kubeconfig (JSON is valid YAML) with the certificate files inlined by path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "konfer-test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "konfer-test", "context": {"cluster": "konfer-test", "user": user}}],
        "current-context": "konfer-test",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class _Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class ControlPlane:
    """What tests get: an admin kubeconfig, kubectl/helm, and non-admin users on demand."""

    kubeconfig: Path
    server: str
    bin_dir: Path
    helm: Path
    workdir: Path
    pki: Pki
    kubernetes_version: str
    # Seconds from the start to each milestone of the boot, for the start-up figures.
    startup: dict[str, float] = field(default_factory=dict)
    _servers: list[_Server] = field(default_factory=list)
    _users: dict[tuple[str, tuple[str, ...]], Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/kopf children: this cluster, helm state in the temp dir."""
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost"]))
        return {
            **os.environ,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            # No streaming watch-lists (see the apiserver's --feature-gates): clients that would
            # ask for them get a refusal and retry after a back-off.
            "KUBE_FEATURE_WatchListClient": "false",
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as cluster admin (or as the user of ``kubeconfig``); a failure raises
        KubectlError showing stderr."""
        config = kubeconfig or self.kubeconfig
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(config), *args]
        done = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, cmd, done.stdout, done.stderr)
        return done

    def kubectl_json(self, *args: str) -> dict[str, object]:
        """``kubectl get ... -o json`` parsed."""
        data: dict[str, object] = json.loads(self.kubectl(*args, "-o", "json").stdout)
        return data

    def create_namespace(self, name: str, timeout: float = 30) -> str:
        """Creates a namespace and waits for its default ServiceAccount, without which the
        ServiceAccount admission plugin rejects every pod created in it."""
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "sa", "default", "-n", name, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"namespace {name}: no default ServiceAccount")
            time.sleep(0.1)
        return name

    def user_kubeconfig(self, name: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as user ``name`` in ``groups`` — no rights until RBAC
        grants some, which is the point for least-privilege tests."""
        key = (name, tuple(groups))
        if key not in self._users:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            tag = f"user-{safe}-{len(self._users)}"
            ukey, ucrt = self.pki.issue(tag, name, groups)
            self._users[key] = write_kubeconfig(
                self.workdir / f"{tag}.kubeconfig", self.server, self.pki.ca_crt, ucrt, ukey, name
            )
        return self._users[key]

    def logs(self, name: str) -> str:
        """A server's log (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stops every server (newest first) and removes the temporary folder."""
        for server in reversed(self._servers):
            with contextlib.suppress(ProcessLookupError):
                server.proc.terminate()
        deadline = time.monotonic() + 10
        for server in reversed(self._servers):
            try:
                server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        self._servers.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _pdeathsig() -> None:
    # SIGKILL, not SIGTERM: etcd and the apiserver would otherwise spend seconds shutting down
    # gracefully after the test process is already gone.
    die_with_parent(signal.SIGKILL)


def _spawn(cp: ControlPlane, name: str, argv: Sequence[str | Path]) -> _Server:
    log = cp.workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cp.workdir,
            env=cp.env,
            preexec_fn=_pdeathsig,
        )
    server = _Server(name, proc, log)
    cp._servers.append(server)
    return server


def _fail(server: _Server, why: str) -> ControlPlaneError:
    tail = server.log.read_text(errors="replace")[-4000:] if server.log.exists() else ""
    return ControlPlaneError(f"{server.name} {why}; log tail:\n{tail}")


def _wait(server: _Server, probe: str, ready: Callable[[], bool], timeout: float) -> None:
    """Polls ``ready()`` until true, failing early (with the log) if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise _fail(server, f"exited with {server.proc.returncode} before {probe}")
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            if ready():
                return
        time.sleep(0.1)
    raise _fail(server, f"not {probe} after {timeout:.0f}s")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    # Never through an HTTP(S)_PROXY from the environment: everything here is on loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(url, timeout=2) as r:
        return bool(r.status == 200)


def _api_get(cp: ControlPlane, path: str) -> dict[str, Any]:
    """GET on the apiserver as admin, without a kubectl process (start-up polls this a lot)."""
    context = ssl.create_default_context(cafile=str(cp.pki.ca_crt))
    context.load_cert_chain(str(cp.pki.dir / "admin.crt"), str(cp.pki.dir / "admin.key"))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(cp.server + path, timeout=5) as r:
        data: dict[str, Any] = json.load(r)
        return data


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def _crds_established(cp: ControlPlane, expected: int) -> bool:
    # `kubectl wait --for=condition=Established` errors out on a CRD whose status is still empty.
    crds = _api_get(cp, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    established = [c for c in crds if _conditions(c).get("Established") == "True"]
    return len(established) >= expected


def _fake_node(name: str) -> dict[str, object]:
    """A Node object kwok adopts (annotation) with the usual kwok node template."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": capacity,
            "capacity": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "",
                "kubeProxyVersion": "fake",
                "kubeletVersion": "fake",
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "",
                "systemUUID": "",
            },
            "phase": "Running",
        },
    }


def _sweep_stale(parent: Path) -> None:
    """Removes the folders of control planes whose test process was killed (its servers died
    with it through PR_SET_PDEATHSIG, but nobody was left to delete the files)."""
    for workdir in parent.glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(workdir, ignore_errors=True)
        except PermissionError:
            pass


def start_control_plane(binaries: Binaries | None = None) -> ControlPlane:
    """Starts etcd, the apiserver (CRDs installed), controller-manager, scheduler, kwok and
    fake nodes, in that order; returns when pods can be scheduled. On any failure every
    started server is stopped before the error propagates."""
    b = binaries or Binaries.locate()
    # etcd fsyncs every write; a tmpfs keeps that off the disk (and the suite fast).
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() else Path(tempfile.gettempdir())
    _sweep_stale(parent)
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
    workdir.chmod(0o700)
    (workdir / "owner.pid").write_text(str(os.getpid()))
    pki = Pki(workdir / "pki")
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    admin_key, admin_crt = pki.issue("admin", "konfer-test-admin", ["system:masters"])
    cp = ControlPlane(
        kubeconfig=write_kubeconfig(
            workdir / "admin.kubeconfig", server, pki.ca_crt, admin_crt, admin_key, "admin"
        ),
        server=server,
        bin_dir=b.bin_dir,
        helm=b.helm,
        workdir=workdir,
        pki=pki,
        kubernetes_version=b.kubernetes_version,
    )
    try:
        _boot(cp, b, port)
    except BaseException:
        cp.stop()
        raise
    return cp


def _boot(cp: ControlPlane, b: Binaries, port: int) -> None:
    pki, workdir = cp.pki, cp.workdir
    t0 = time.monotonic()

    def mark(milestone: str) -> None:
        cp.startup[milestone] = round(time.monotonic() - t0, 2)

    etcd_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd = _spawn(
        cp,
        "etcd",
        [
            b.etcd, "--name", "konfer-test", "--data-dir", workdir / "etcd",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"konfer-test=http://127.0.0.1:{peer_port}",
            "--log-level", "warn", "--logger", "zap", "--quota-backend-bytes", str(2 << 30),
        ],
    )  # fmt: skip
    serving_key, serving_crt = pki.issue(
        "apiserver",
        "kube-apiserver",
        server_sans=[
            "IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes",
            "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ],
    )  # fmt: skip
    sa_key, sa_pub = pki.service_account_keys()
    kcm_key, kcm_crt = pki.issue("kcm", "system:kube-controller-manager")
    sched_key, sched_crt = pki.issue("scheduler", "system:kube-scheduler")
    kcm_kubeconfig = write_kubeconfig(
        workdir / "kcm.kubeconfig", cp.server, pki.ca_crt, kcm_crt, kcm_key, "kcm"
    )
    sched_kubeconfig = write_kubeconfig(
        workdir / "scheduler.kubeconfig", cp.server, pki.ca_crt, sched_crt, sched_key, "scheduler"
    )
    _wait(etcd, "serving", lambda: _http_ok(f"{etcd_url}/health"), 30)
    mark("etcd")

    apiserver = _spawn(
        cp,
        "kube-apiserver",
        [
            b.bin_dir / "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={serving_crt}", f"--tls-private-key-file={serving_key}",
            f"--client-ca-file={pki.ca_crt}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--allow-privileged=true",
            # Streaming watch-lists need etcd's progress notifications (etcd >= 3.4.31); on
            # Debian's 3.4.23 the cacher refuses them, and with WatchList on the apiserver turns
            # every `resourceVersion=0` watch (kwok's kind) into one, so kwok's informers would
            # fail, back off and lag by seconds.
            "--feature-gates=WatchList=false",
            "--profiling=false",
            "--v=1",
        ],
    )  # fmt: skip
    admin = ssl.create_default_context(cafile=str(pki.ca_crt))
    admin.load_cert_chain(str(pki.dir / "admin.crt"), str(pki.dir / "admin.key"))
    _wait(apiserver, "ready", lambda: _http_ok(f"{cp.server}/readyz", admin), 90)
    mark("kube-apiserver")

    scheduler = _spawn(
        cp,
        "kube-scheduler",
        [
            b.bin_dir / "kube-scheduler",
            f"--kubeconfig={sched_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--feature-gates=WatchListClient=false",
            "--profiling=false",
            "--v=1",
        ],
    )  # fmt: skip
    kwok = _spawn(
        cp,
        "kwok",
        [
            b.kwok,
            f"--kubeconfig={cp.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            # Without it kwok renews no node Lease: ~40 s after start the node lifecycle
            # controller marks the nodes NotReady and taints them unreachable.
            "--node-lease-duration-seconds=40",
            f"--config={KWOK_STAGES}",
            f"--server-address=127.0.0.1:{free_port()}",
        ],
    )  # fmt: skip
    nodes = "\n".join(json.dumps(_fake_node(n)) for n in FAKE_NODES)
    cp.kubectl("create", "-f", "-", input=nodes)

    # CRDs go in before the controller-manager starts: its garbage collector discovers
    # resources once and then only every 30 s.
    crds = sorted((ROOT / "crds").glob("*.yaml"))
    files = [a for path in [*crds, b.kserve_crd] for a in ("-f", str(path))]
    cp.kubectl("apply", "--server-side", "--force-conflicts", *files)
    _wait(apiserver, "establishing the CRDs", lambda: _crds_established(cp, len(crds) + 1), 60)
    mark("crds")

    kcm = _spawn(
        cp,
        "kube-controller-manager",
        [
            b.bin_dir / "kube-controller-manager",
            f"--kubeconfig={kcm_kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--feature-gates=WatchListClient=false",
            "--controllers=*",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={pki.ca_crt}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca_crt}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ],
    )  # fmt: skip

    def nodes_ready() -> bool:
        nodes = _api_get(cp, "/api/v1/nodes")["items"]
        ready = [n for n in nodes if _conditions(n).get("Ready") == "True"]
        return len(ready) == len(FAKE_NODES)

    def default_service_account() -> bool:
        accounts = _api_get(cp, "/api/v1/namespaces/default/serviceaccounts")["items"]
        return any(a["metadata"]["name"] == "default" for a in accounts)

    _wait(kwok, "marking the fake nodes Ready", nodes_ready, 60)
    mark("nodes")
    # Pods are rejected until the controller-manager has made the namespace's ServiceAccount.
    _wait(kcm, "creating the default ServiceAccount", default_service_account, 60)
    mark("ready")
    for s in (scheduler, kcm, kwok):
        if s.proc.poll() is not None:
            raise _fail(s, f"exited with {s.proc.returncode}")


@contextlib.contextmanager
def control_plane_running() -> Iterator[ControlPlane]:
    cp = start_control_plane()
    try:
        yield cp
    finally:
        cp.stop()


@contextlib.contextmanager
def kind_control_plane() -> Iterator[ControlPlane]:
    """The same fixture object over a kind cluster (pytest-kind, real kubelet and images).

    For machines with Docker (KONFER_TEST_CLUSTER=kind); the user certificates are minted
    with the CA copied out of kind's control-plane container.
    """
    from pytest_kind import KindCluster  # type: ignore[import-not-found, unused-ignore]

    name = "konfer-test"
    kind = KindCluster(name)
    kind.create()
    workdir = Path(tempfile.mkdtemp(prefix="konfer-kind-"))
    try:
        (workdir / "pki").mkdir()
        for f in ("ca.crt", "ca.key"):
            src = f"{name}-control-plane:/etc/kubernetes/pki/{f}"
            subprocess.run(["docker", "cp", src, str(workdir / "pki" / f)], check=True)
        kubeconfig = Path(kind.kubeconfig_path)
        config = json.loads(
            subprocess.run(
                [str(kind.kubectl_path), "--kubeconfig", str(kubeconfig), "config", "view",
                 "--minify", "--raw", "-o", "json"],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        cp = ControlPlane(
            kubeconfig=kubeconfig,
            server=config["clusters"][0]["cluster"]["server"],
            bin_dir=Path(kind.kubectl_path).parent,
            helm=Path(shutil.which("helm") or "helm"),
            workdir=workdir,
            pki=Pki.existing(workdir / "pki"),
            kubernetes_version=read_versions()["KUBERNETES_VERSION"],
        )
        kserve = Binaries.kserve_crd_path()
        crds = [*sorted((ROOT / "crds").glob("*.yaml")), *([kserve] if kserve.exists() else [])]
        cp.kubectl("apply", "--server-side", *[a for p in crds for a in ("-f", str(p))])
        wait = ("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        deadline = time.monotonic() + 60
        while cp.kubectl(*wait, check=False).returncode and time.monotonic() < deadline:
            time.sleep(0.5)  # a CRD without status yet makes `kubectl wait` fail at once
        yield cp
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        kind.delete()


def main() -> None:
    """``python -m tests.k8s.cluster``: a control plane for bench/ or manual poking."""
    started = time.monotonic()
    with control_plane_running() as cp:
        print(f"control plane up in {time.monotonic() - started:.1f}s: {cp.startup}")
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(f"kubectl: {cp.bin_dir / 'kubectl'}   helm: {cp.helm}   logs: {cp.workdir}")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        # A second Ctrl+C (or `timeout` forwarding one) must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    main()
