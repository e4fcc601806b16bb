"""The embedded facility's key material, created once in ``afhub up``'s data directory.

What lives here: the facility CA (a self-signed certificate that user servers, workers and the
storage services trust), host certificates it signs for the embedded XRootD origin and cache,
and the demo provider's token-signing key (an RSA JWK with a ``kid``, whose public half the
storage services are given). Files holding private keys are written 0600 through
``secrets.write_file``; nothing here logs or returns a private key except to its caller.
What must not: process management (``runner.py``), server configuration (``xrootd.py``).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .secrets import write_file

CA_CERT = "facility-ca.pem"
CA_KEY = "facility-ca.key"
SIGNING_KEY = "idp-signing-key.json"
CA_DAYS = 3650
HOST_DAYS = 825


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def ensure_ca(directory: str, *, name: str = "afhub facility CA") -> tuple[str, str]:
    """``(cert_path, key_path)`` of the facility CA in ``directory``, created on first use."""
    cert_path = os.path.join(directory, CA_CERT)
    key_path = os.path.join(directory, CA_KEY)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_file(key_path, _key_pem(key))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def host_certificate(
    ca_cert_path: str, ca_key_path: str, *, names: list[str], ips: list[str]
) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)`` of a server certificate for ``names``/``ips``, signed by the CA."""
    with open(ca_cert_path, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(ca_key_path, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=HOST_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def subject_hash(cert_path: str) -> str:
    """OpenSSL's ``x509 -subject_hash`` of a certificate (the name ``openssl rehash`` links)."""
    import subprocess

    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject_hash", "-in", cert_path],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def ensure_signing_key(directory: str) -> str:
    """The demo provider's token-signing key (an RSA private JWK with a ``kid``), created on
    first use in ``directory`` (0600). Returns its path; the key itself stays in the file."""
    path = os.path.join(directory, SIGNING_KEY)
    if os.path.exists(path):
        return path
    from authlib.jose import JsonWebKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = JsonWebKey.import_key(_key_pem(key), {"kty": "RSA"}).as_dict(is_private=True)
    public = {k: jwk[k] for k in ("kty", "n", "e")}
    jwk["kid"] = hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()[:16]
    jwk["alg"] = "RS256"
    jwk["use"] = "sig"
    write_file(path, json.dumps(jwk).encode())
    return path


def public_jwks(signing_key_path: str) -> dict:
    """The JWKS (public half only) of the key at ``signing_key_path``."""
    with open(signing_key_path, encoding="utf-8") as f:
        jwk = json.load(f)
    return {"keys": [{k: jwk[k] for k in ("kty", "n", "e", "kid", "alg", "use") if k in jwk}]}
