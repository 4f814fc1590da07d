"""Certificates and keys for a local control plane.

One CA signs the API server's serving certificate (127.0.0.1, localhost and the in-cluster
service names) and an admin client certificate in group ``system:masters``; a separate key pair
signs and verifies ServiceAccount tokens, so TokenRequest and TokenReview work as in a cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)
SERVICE_IP = "10.0.0.1"  # the first address of --service-cluster-ip-range, as kube-apiserver assigns it
NODE_IP = "10.244.0.1"  # the node's address on its pod bridge; the API server's in node mode
NODE_NAME = "svcreg-node"


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files a control plane and its kubeconfig need."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path
    node_client_cert: Path  # the kubelet's identity: system:node:<name> in system:nodes
    node_client_key: Path
    node_serving_cert: Path  # the kubelet's own HTTPS endpoint (logs, exec)
    node_serving_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: supported for serving, client and ServiceAccount (ES256) keys, and fast to generate.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    is_ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate(directory: Path) -> Pki:
    """Create a fresh CA, serving and admin certificates, and the ServiceAccount key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_public=directory / "sa.pub",
        sa_private=directory / "sa.key",
        node_client_cert=directory / "kubelet-client.crt",
        node_client_key=directory / "kubelet-client.key",
        node_serving_cert=directory / "kubelet.crt",
        node_serving_key=directory / "kubelet.key",
    )
    ca_key = _key()
    ca_name = _name("svcreg-local-ca")
    _write_cert(
        pki.ca_cert, _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, is_ca=True)
    )

    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
        x509.IPAddress(ipaddress.ip_address(NODE_IP)),
    ]

    def leaf(
        cert: Path,
        key_path: Path,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> None:
        """A key and a certificate the CA signs for it."""
        key = _key()
        _write_key(key_path, key)
        issued = _issue(subject=subject, key=key, issuer=ca_name, issuer_key=ca_key, usage=usage, sans=sans)
        _write_cert(cert, issued)

    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    leaf(pki.serving_cert, pki.serving_key, _name("kube-apiserver"), server, sans)
    leaf(pki.admin_cert, pki.admin_key, _name("svcreg-admin", "system:masters"), client)
    leaf(
        pki.node_client_cert,
        pki.node_client_key,
        _name(f"system:node:{NODE_NAME}", "system:nodes"),
        client,
    )
    node_sans: list[x509.GeneralName] = [
        x509.DNSName(NODE_NAME),
        x509.IPAddress(ipaddress.ip_address(NODE_IP)),
    ]
    leaf(pki.node_serving_cert, pki.node_serving_key, _name(NODE_NAME), server, node_sans)

    sa_key = _key()
    _write_key(pki.sa_private, sa_key)
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def serving_pair(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A fresh CA and a serving certificate for DNS ``names`` signed by it, as a TLS Secret
    holds them: (ca.crt, tls.crt, tls.key) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key_path = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    ca_key, ca_name = _key(), _name("svcreg-serving-ca")
    _write_cert(ca, _issue(subject=ca_name, key=ca_key, issuer=ca_name, issuer_key=ca_key, is_ca=True))
    key = _key()
    _write_key(key_path, key)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    usage = ExtendedKeyUsageOID.SERVER_AUTH
    issued = _issue(
        subject=_name(names[0]), key=key, issuer=ca_name, issuer_key=ca_key, usage=usage, sans=sans
    )
    _write_cert(cert, issued)
    return ca, cert, key_path
