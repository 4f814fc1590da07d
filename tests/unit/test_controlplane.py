"""Control-plane plumbing that needs no running cluster."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from svcreg.devtools.controlplane import build, cluster, pki


def test_cache_root_is_overridable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SVCREG_CACHE", str(tmp_path / "c"))
    assert build.cache_root() == tmp_path / "c"
    monkeypatch.delenv("SVCREG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_root() == tmp_path / "xdg" / "svcreg"


def test_every_staging_module_is_replaced_with_the_pinned_tag() -> None:
    go_mod = (build.GOMOD_DIR / "k8s" / "go.mod").read_text()
    minor = build.KUBERNETES_VERSION.replace("v1.", "v0.")
    assert f"k8s.io/kubernetes {build.KUBERNETES_VERSION}" in go_mod
    replaced = [line.split()[0] for line in go_mod.splitlines() if "=> " in line]
    assert len(replaced) >= 30
    for line in go_mod.splitlines():
        if "=>" in line:
            assert line.strip().endswith(minor), line


def test_version_ldflags_stamp_both_packages() -> None:
    k8s = next(c for c in build.COMPONENTS if c.name == "k8s")
    flags = " ".join(k8s.ldflags)
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"{package}.gitVersion={build.KUBERNETES_VERSION}" in flags
        assert f"{package}.gitMinor=36" in flags


def test_install_dir_moves_when_inputs_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCREG_CACHE", str(tmp_path))
    component = build.Component(name="etcd", version="v0", packages=(".",), binaries=("etcd",), ldflags=())
    other = build.Component(name="etcd", version="v0", packages=(".",), binaries=("etcd",), ldflags=("-s",))
    assert component.install_dir() != other.install_dir()
    assert not component.is_built()


def test_pki_issues_what_the_api_server_needs(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path)
    ca = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(keys.serving_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(keys.admin_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        pki.SERVICE_IP,
        pki.NODE_IP,  # the API server's address when a node runs beside it
    ]
    kubelet = x509.load_pem_x509_certificate(keys.node_client_cert.read_bytes())
    kubelet.verify_directly_issued_by(ca)
    assert kubelet.subject.rfc4514_string() == f"O=system:nodes,CN=system:node:{pki.NODE_NAME}"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert oct(keys.admin_key.stat().st_mode & 0o777) == "0o600"


def test_a_reused_pid_is_not_mistaken_for_our_process(tmp_path: Path) -> None:
    """``down`` must never signal a process that merely has a recorded pid."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        real = cluster._start_time(sleeper.pid)
        assert real is not None
        ours = cluster.ProcessRecord(name="etcd", pid=sleeper.pid, start_time=real, log="")
        impostor = cluster.ProcessRecord(name="etcd", pid=sleeper.pid, start_time=str(int(real) + 1), log="")
        assert cluster._alive(ours)
        assert not cluster._alive(impostor)
        cluster._stop(impostor)
        assert sleeper.poll() is None  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cluster._start_time(sleeper.pid) is None or not os.path.exists(f"/proc/{sleeper.pid}")


def test_status_of_a_dead_cluster_is_none(tmp_path: Path) -> None:
    state = {
        "directory": str(tmp_path),
        "server": "https://127.0.0.1:1",
        "kubeconfig": "k",
        "path_dir": "p",
        "etcd_url": "http://127.0.0.1:2",
        "processes": [{"name": "etcd", "pid": 999999999, "start_time": "1", "log": "l"}],
    }
    (tmp_path / cluster.STATE_FILE).write_text(json.dumps(state))
    assert cluster.status(tmp_path) is None
    assert cluster.down(tmp_path) is False
    assert not tmp_path.exists()
