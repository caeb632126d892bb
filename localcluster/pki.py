"""Certificates and keys for the local control plane, made with the ``openssl`` command line tool.

One CA signs everything: the API server's serving certificate, client certificates (admin in ``system:masters``,
the controller manager, nodes) and, as the controller manager's ``--cluster-signing-*`` pair, CSRs. Keys are ECDSA
P-256 (fast to generate, accepted everywhere in Kubernetes). A separate key pair signs service-account tokens.
Files are created once per state directory and reused, so a warm ``up`` does not pay for them again.
"""

from __future__ import annotations

import base64
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["Pki", "ensure_pki", "issue_client_cert", "write_kubeconfig"]

CA_SUBJECT = "/CN=netpol-auditor-localcluster-ca"
DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def front_proxy_ca(self) -> Pki:
        """The separate CA kubeadm uses for the aggregation layer's request-header authentication."""
        return Pki(self.dir / "front-proxy")

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def _sign(pki: Pki, cert: Path, key: Path, subject: str, extensions: list[str]) -> None:
    """Issue ``cert`` for ``key`` signed by the CA (``openssl req -x509 -CA``, OpenSSL >= 3.0)."""
    _ec_key(key)
    args = ["req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", DAYS, "-subj", subject,
            "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key)]
    for ext in ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                *extensions]:
        args += ["-addext", ext]
    _openssl(*args)


def _subject(cn: str, orgs: tuple[str, ...]) -> str:
    return "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"


def issue_client_cert(pki: Pki, name: str, cn: str, orgs: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client certificate (user ``cn``, groups ``orgs``) at ``<pki>/<name>.crt/.key``; reused when present."""
    cert, key = pki.client(name)
    if not (cert.exists() and key.exists()):
        _sign(pki, cert, key, _subject(cn, orgs), ["extendedKeyUsage=clientAuth"])
    return cert, key


def _ensure_ca(ca: Pki, subject: str) -> None:
    if not (ca.ca_cert.exists() and ca.ca_key.exists()):
        _ec_key(ca.ca_key)
        _openssl("req", "-x509", "-new", "-key", str(ca.ca_key), "-out", str(ca.ca_cert), "-days", DAYS,
                 "-subj", subject, "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")


def ensure_pki(pki_dir: Path, service_ip: str, extra_sans: tuple[str, ...] = ()) -> Pki:
    """CA, API server serving certificate, front-proxy CA and client, service-account key pair; idempotent.

    The serving certificate names what clients use: 127.0.0.1 and localhost (we listen on loopback only), the
    ``kubernetes`` Service's ClusterIP ``service_ip`` and its DNS names, as kubeadm does.
    """
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki_dir.chmod(0o700)
    pki = Pki(pki_dir)
    _ensure_ca(pki, CA_SUBJECT)
    front = pki.front_proxy_ca
    front.dir.mkdir(mode=0o700, exist_ok=True)
    _ensure_ca(front, "/CN=front-proxy-ca")
    issue_client_cert(front, "front-proxy-client", "front-proxy-client")
    if not (pki.serving_cert.exists() and pki.serving_key.exists()):
        dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"]
        ips = ["127.0.0.1", service_ip]
        for san in extra_sans:
            try:
                ipaddress.ip_address(san)
                ips.append(san)
            except ValueError:
                dns.append(san)
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in dict.fromkeys(ips)])
        _sign(pki, pki.serving_cert, pki.serving_key, "/CN=kube-apiserver",
              [f"subjectAltName={san}", "extendedKeyUsage=serverAuth"])
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        _ec_key(pki.sa_key)
        _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Pki, cert: Path, key: Path, user: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for ``user`` against ``server``."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localcluster", "cluster": {
            "server": server, "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": "localcluster", "context": {"cluster": "localcluster", "user": user}}],
        "current-context": "localcluster",
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
