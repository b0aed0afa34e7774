"""SSH signatures (`ssh-keygen -Y sign`) with Ed25519 keys: armor, parse, sign, verify.

Written from OpenSSH's PROTOCOL.sshsig. A signature is the armored blob::

    byte[6] "SSHSIG"  uint32 1  string publickey  string namespace  string reserved
    string hash_algorithm  string signature

and what the key signs is not the message but::

    byte[6] "SSHSIG"  string namespace  string reserved  string hash_algorithm  string H(message)

(`string` is a uint32 length and the bytes, RFC 4251). Only `ssh-ed25519` keys are
supported, with `sha256` or `sha512` as H; signatures made here use sha512, as ssh-keygen
does. Every function is pure; keys are `cryptography` objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"SSHSIG"
VERSION = 1
KEY_TYPE = "ssh-ed25519"
HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_WIDTH = 70  # ssh-keygen's line width


class SshSigError(ValueError):
    """A signature that cannot be read, or that does not verify; the message says why."""


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG blob."""

    public_key: Ed25519PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes  # the raw 64-byte Ed25519 signature
    blob: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


# -- wire format -----------------------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise SshSigError(f"truncated: {what} runs past the end of the blob")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def uint32(self, what: str) -> int:
        value: int = struct.unpack(">I", self.take(4, what))[0]
        return value

    def string(self, what: str) -> bytes:
        return self.take(self.uint32(what), what)

    def text(self, what: str) -> str:
        try:
            return self.string(what).decode("ascii")
        except UnicodeDecodeError:
            raise SshSigError(f"{what} is not ASCII") from None

    def end(self) -> None:
        if self.at != len(self.data):
            raise SshSigError(f"{len(self.data) - self.at} byte(s) after the last field")


def public_key_blob(key: Ed25519PublicKey) -> bytes:
    """The SSH wire form of an Ed25519 public key: string "ssh-ed25519", string key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(KEY_TYPE.encode()) + _string(raw)


def _public_key(blob: bytes) -> Ed25519PublicKey:
    reader = _Reader(blob)
    kind = reader.text("the public key's type")
    if kind != KEY_TYPE:
        raise SshSigError(f"a {kind} key: only {KEY_TYPE} keys are supported")
    raw = reader.string("the Ed25519 public key")
    reader.end()
    if len(raw) != 32:
        raise SshSigError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """`SHA256:…`, the fingerprint `ssh-keygen -l` prints for the key."""
    digest = hashlib.sha256(public_key_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def new_key_file(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key, written to `path` in OpenSSH format (mode 0600) as ssh-keygen does."""
    private = Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return private


def openssh_line(key: Ed25519PublicKey) -> str:
    """The key as an `ssh-ed25519 AAAA…` line."""
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def signed_data(message: bytes, namespace: str, hash_algorithm: str) -> bytes:
    """What the key signs: the preamble, namespace, reserved, hash name and H(message)."""
    if hash_algorithm not in HASHES:
        raise SshSigError(f"hash algorithm {hash_algorithm!r} (known: sha256, sha512)")
    digest = HASHES[hash_algorithm](message).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


# -- armor -----------------------------------------------------------------------------------


def armor(blob: bytes) -> str:
    """The blob between the BEGIN/END SSH SIGNATURE lines, base64 in lines of 70."""
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + _WIDTH] for i in range(0, len(text), _WIDTH)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def dearmor(text: str) -> bytes:
    """The blob of an armored signature; `SshSigError` when it is not one."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or lines[0] != BEGIN:
        raise SshSigError(f"does not start with {BEGIN}")
    if lines[-1] != END:
        raise SshSigError(f"does not end with {END}")
    body = "".join(lines[1:-1])
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SshSigError("the armored signature is not valid base64") from None


# -- parse, sign, verify ---------------------------------------------------------------------


def parse(text: str) -> SshSignature:
    """Parse an armored SSHSIG signature (of an Ed25519 key)."""
    blob = dearmor(text)
    reader = _Reader(blob)
    if reader.take(6, "the magic preamble") != MAGIC:
        raise SshSigError("not an SSHSIG blob (no SSHSIG preamble)")
    version = reader.uint32("the version")
    if version != VERSION:
        raise SshSigError(f"SSHSIG version {version} (known: {VERSION})")
    key = _public_key(reader.string("the public key"))
    namespace = reader.text("the namespace")
    reader.string("the reserved field")
    hash_algorithm = reader.text("the hash algorithm")
    signature_blob = reader.string("the signature")
    reader.end()
    inner = _Reader(signature_blob)
    kind = inner.text("the signature's type")
    if kind != KEY_TYPE:
        raise SshSigError(f"a {kind} signature: only {KEY_TYPE} is supported")
    raw = inner.string("the Ed25519 signature")
    inner.end()
    if len(raw) != 64:
        raise SshSigError(f"an Ed25519 signature has 64 bytes, not {len(raw)}")
    return SshSignature(key, namespace, hash_algorithm, raw, blob)


def sign(
    private_key: Ed25519PrivateKey, message: bytes, namespace: str, hash_algorithm: str = "sha512"
) -> str:
    """An armored SSHSIG signature of `message`, as `ssh-keygen -Y sign -n namespace` makes."""
    raw = private_key.sign(signed_data(message, namespace, hash_algorithm))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_key_blob(private_key.public_key()))
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_algorithm.encode())
        + _string(_string(KEY_TYPE.encode()) + _string(raw))
    )
    return armor(blob)


def verify(signature: SshSignature, message: bytes, namespace: str) -> None:
    """Raise `SshSigError` unless `signature` is its key's signature of `message` in
    `namespace` (a signature made for another namespace never verifies)."""
    if signature.namespace != namespace:
        raise SshSigError(f"made for namespace {signature.namespace!r}, not {namespace!r}")
    data = signed_data(message, namespace, signature.hash_algorithm)
    try:
        signature.public_key.verify(signature.signature, data)
    except InvalidSignature:
        raise SshSigError("the signature does not verify over the statement") from None
