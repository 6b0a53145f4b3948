"""Private keys for the Connect CA: generation, PEM, key IDs and encryption at rest.

Follows Consul's built-in provider (``agent/connect/generate.go``, ``parsing.go``):

* key types are ``ec`` (P-256 default, P-384) and ``rsa`` (2048, 4096);
* private keys are PEM-encoded in the "traditional" form Consul emits
  (``EC PRIVATE KEY`` / ``RSA PRIVATE KEY``) so they round-trip through Consul
  tooling, but any unencrypted PEM private key is accepted on input;
* the X.509 key identifier (SKI/AKI) is Consul's ``connect.KeyId``: SHA-256 over
  the DER ``SubjectPublicKeyInfo``, shown as lower-case colon hex
  (``connect.HexString``) in ``SigningKeyID``.

CA keys are stored encrypted (``encrypt_key_pem``) because the database is a
weaker boundary than the process holding the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

DEFAULT_KEY_TYPE = "ec"
DEFAULT_KEY_BITS = 256
DEFAULT_RSA_KEY_BITS = 4096  # Consul's default when only key_type "rsa" is given

#: Allowed key sizes per type. Narrower than Consul (no P-224/P-521): these are
#: the curves every Envoy/BoringSSL build negotiates.
ALLOWED_KEY_BITS: dict[str, tuple[int, ...]] = {"ec": (256, 384), "rsa": (2048, 4096)}

_CURVES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1}

_ENC_VERSION = "v1"
_ENC_SALT_LEN = 16
_ENC_NONCE_LEN = 12
_ENC_INFO = b"terminus/connect-ca/private-key/v1"


class KeyDecryptionError(Exception):
    """An encrypted key blob could not be decrypted (wrong secret, corrupt or unknown format)."""


def validate_key_params(key_type: str, key_bits: int) -> tuple[str, int]:
    """Normalise and check a (key_type, key_bits) pair; messages mirror Consul's config errors."""
    kt = (key_type or "").lower()
    if kt not in ALLOWED_KEY_BITS:
        raise ValueError(f'invalid key_type "{key_type}": private key type must be either "ec" or "rsa"')
    if isinstance(key_bits, bool) or not isinstance(key_bits, int):
        raise ValueError(f'invalid key_bits {key_bits!r} for key_type "{kt}": must be an integer')
    allowed = ALLOWED_KEY_BITS[kt]
    if key_bits not in allowed:
        choices = " or ".join(str(b) for b in allowed)
        label = "EC" if kt == "ec" else "RSA"
        raise ValueError(
            f'invalid key_bits {key_bits} for key_type "{kt}": {label} key length must be {choices} bits'
        )
    return kt, key_bits


def generate_key(key_type: str = DEFAULT_KEY_TYPE, key_bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
    """Generate a CA or leaf private key after validating the type/size pair."""
    kt, bits = validate_key_params(key_type, key_bits)
    if kt == "ec":
        return ec.generate_private_key(_CURVES[bits]())
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_info(key: PrivateKey | PublicKey) -> tuple[str, int]:
    """Return Consul's (PrivateKeyType, PrivateKeyBits) for a key (``connect.KeyInfoFromCert``)."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ec", key.curve.key_size
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa", key.key_size
    raise ValueError(f"unsupported key type: {type(key).__name__}")


def private_key_to_pem(key: PrivateKey) -> str:
    """PEM-encode a private key as Consul does (SEC1 ``EC PRIVATE KEY`` / PKCS#1 ``RSA PRIVATE KEY``)."""
    key_info(key)  # reject unsupported key types early
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def private_key_from_pem(pem: str | bytes, *, trusted: bool = False) -> PrivateKey:
    """Parse an unencrypted PEM private key (SEC1, PKCS#1 or PKCS#8); only EC and RSA are accepted.

    RSA keys are checked for consistency, which costs ~45 ms for 2048 bits.
    ``trusted=True`` skips that for keys this service generated and stored
    itself (e.g. just authenticated by ``decrypt_key_pem``); never for input
    from clients. Hot paths should parse once and keep the key object.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=trusted
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"error parsing private key: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"unsupported private key type: {type(key).__name__}")
    return key


def public_key_to_pem(key: PublicKey) -> str:
    """PEM-encode a public key as SubjectPublicKeyInfo."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def hex_string(data: bytes) -> str:
    """Consul's ``connect.HexString``: lower-case hex bytes joined by ':'."""
    return ":".join(f"{b:02x}" for b in data)


def key_id_bytes(public_key: PublicKey) -> bytes:
    """Consul's ``connect.KeyId``: SHA-256 of the DER SubjectPublicKeyInfo; used as SKI and AKI."""
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise ValueError(f"invalid key type: {type(public_key).__name__}")
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def key_id(public_key: PublicKey) -> str:
    """Colon-hex key ID, i.e. the ``SigningKeyID`` of a CA whose SKI was made by ``key_id_bytes``."""
    return hex_string(key_id_bytes(public_key))


def _derive(secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_ENC_INFO).derive(secret)


def encrypt_key_pem(pem: str, secret: bytes) -> str:
    """Encrypt a PEM key for storage: ``v1:`` + base64url(salt16 | nonce12 | AES-256-GCM ciphertext+tag).

    The AES key is HKDF-SHA256(secret, salt); the per-blob salt keeps keys
    distinct even with one secret. HKDF is not a password hash, so ``secret``
    must be high-entropy (e.g. 32 random bytes), not a passphrase.
    """
    if not secret:
        raise ValueError("encryption secret must not be empty")
    salt = os.urandom(_ENC_SALT_LEN)
    nonce = os.urandom(_ENC_NONCE_LEN)
    ct = AESGCM(_derive(secret, salt)).encrypt(nonce, pem.encode("utf-8"), _ENC_VERSION.encode())
    body = base64.urlsafe_b64encode(salt + nonce + ct).rstrip(b"=").decode("ascii")
    return f"{_ENC_VERSION}:{body}"


def decrypt_key_pem(blob: str, secret: bytes) -> str:
    """Reverse ``encrypt_key_pem``; raises ``KeyDecryptionError`` on any failure."""
    if not secret:
        raise KeyDecryptionError("encryption secret must not be empty")
    version, sep, body = (blob or "").partition(":")
    if not sep or version != _ENC_VERSION:
        raise KeyDecryptionError(f"unsupported encrypted key format {version!r} (expected 'v1:')")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise KeyDecryptionError("encrypted key is not valid base64") from None
    if len(raw) < _ENC_SALT_LEN + _ENC_NONCE_LEN + 16:
        raise KeyDecryptionError("encrypted key is truncated")
    salt, nonce = raw[:_ENC_SALT_LEN], raw[_ENC_SALT_LEN : _ENC_SALT_LEN + _ENC_NONCE_LEN]
    ct = raw[_ENC_SALT_LEN + _ENC_NONCE_LEN :]
    try:
        plain = AESGCM(_derive(secret, salt)).decrypt(nonce, ct, _ENC_VERSION.encode())
    except InvalidTag:
        raise KeyDecryptionError(
            "cannot decrypt CA private key: wrong secret or corrupted data"
        ) from None
    return plain.decode("utf-8")
