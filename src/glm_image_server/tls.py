"""`serve --tls self-signed`: HTTPS without a certificate of your own (fal's Python client speaks only
HTTPS). A local CA and a server certificate it signs are made once in the data directory's tls/, so clients
trust `tls/ca.pem` across restarts (a changed --host makes only the server certificate again). A CA and a
leaf, because strict verifiers (Node, Python 3.13's default context) refuse a leaf that signs itself."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS, SERVER_DAYS, RENEW_DAYS = 3650, 397, 30
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class SelfSigned:
    """Where a self-signed setup's files are: `ca` is the certificate clients trust."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca, self.ca_key = folder / "ca.pem", folder / "ca-key.pem"
        self.cert, self.key = folder / "server.pem", folder / "server-key.pem"


def server_names(host: str, public_url: str | None = None) -> list[str]:
    """What the certificate names: the bound host (this machine's name when it binds every address), the
    public URL's host, and the loopback names."""
    names = [socket.gethostname() if host in ("0.0.0.0", "::", "") else host]
    if public_url and (public_host := urlsplit(public_url).hostname):
        names.append(public_host)
    return list(dict.fromkeys([*names, *LOCAL_NAMES]))


def ensure_self_signed(folder: Path, names: list[str]) -> SelfSigned:
    """The CA and a server certificate for `names` in `folder` (settings.tls_dir), made when missing, when
    the server certificate does not name all of `names`, or when it expires within RENEW_DAYS."""
    files = SelfSigned(folder)
    files.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (files.ca.exists() and files.ca_key.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _write(files.ca_key, _key_pem(ca_key))
        label = f"glm-image-server local CA ({socket.gethostname()})"
        _write(files.ca, _certificate(ca_key, _name(label[:64]), ca_key, None, CA_DAYS))
        files.cert.unlink(missing_ok=True)
    if not _covers(files.cert, names):
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        _write(files.key, _key_pem(key))
        extensions = [
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
        ]
        _write(files.cert, _certificate(key, _name(names[0]), ca_key, ca, SERVER_DAYS, extensions))
    return files


def trusting_context(ca: Path | None) -> ssl.SSLContext | bool:
    """Outgoing HTTPS trust: the usual (SSL_CERT_FILE, else certifi's) plus our own CA where it exists."""
    if ca is None or not ca.exists():
        return True
    import httpx

    context = httpx.create_ssl_context()
    context.load_verify_locations(cafile=str(ca))
    return context


def _write(path: Path, data: bytes) -> None:
    """Private keys readable by this user only; written whole (a crash leaves the old file or none)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    signer,
    ca: x509.Certificate | None,
    days: int,
    extensions: Sequence[x509.ExtensionType] = (),
) -> bytes:
    """PEM of a CA certificate when `ca` is None (it signs itself), else of a leaf that `ca` signs."""
    public, is_ca = key.public_key(), ca is None
    identifiers = [x509.SubjectKeyIdentifier.from_public_key(public)]
    if not is_ca:
        identifiers.append(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()))
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment"), False)
    usage |= dict.fromkeys(("key_agreement", "encipher_only", "decipher_only"), False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if is_ca else ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=is_ca, crl_sign=is_ca, **usage), critical=True
        )
    )
    for extension in [*extensions, *identifiers]:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _covers(cert_path: Path, names: list[str]) -> bool:
    """True when the certificate exists, names every one of `names` and is not about to expire."""
    if not cert_path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        listed = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(name.value) for name in listed}  # DNS names and IP addresses
    wanted = {str(_general_name(n).value) for n in names}
    fresh = cert.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_DAYS)
    return wanted <= have and fresh
