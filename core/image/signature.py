"""Simple signing: the signed payload and GPG through Debian's gpg (python-gnupg).

A signature is an OpenPGP signed message (not detached) whose literal data is::

    {"critical": {"type": "atomic container signature",
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "identity": {"docker-reference": "registry.example.com/ns/repo:tag"}},
     "optional": {"creator": "...", "timestamp": 1700000000}}

(containers-signature(5)). Parsing is strict, as containers/image's: unknown
keys in ``critical`` are refused. Functions here block on the gpg process;
async callers run them with :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from crio import __version__
from crio.errors import CrioError
from crio.image.reference import Reference, normalize, parse, validate_digest

__all__ = [
    "SIGNATURE_TYPE",
    "Keyring",
    "SignatureError",
    "SignedPayload",
    "parse_payload",
    "render_payload",
    "sign",
]

SIGNATURE_TYPE = "atomic container signature"


class SignatureError(CrioError):
    """A signature is invalid, unverifiable, or says something unacceptable."""


@dataclass(frozen=True, slots=True)
class SignedPayload:
    manifest_digest: str
    docker_reference: Reference
    creator: str = ""
    timestamp: int = 0


def render_payload(manifest_digest: str, docker_reference: Reference) -> bytes:
    doc = {
        "critical": {
            "type": SIGNATURE_TYPE,
            "image": {"docker-manifest-digest": manifest_digest},
            "identity": {"docker-reference": str(docker_reference)},
        },
        "optional": {"creator": f"crio {__version__}", "timestamp": int(time.time())},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _exact_keys(obj: object, keys: set[str], where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise SignatureError(f"signature payload: {where} is not an object")
    if set(obj) != keys:
        raise SignatureError(
            f"signature payload: {where} has keys {sorted(obj)}, expected {sorted(keys)}"
        )
    return obj


def parse_payload(data: bytes) -> SignedPayload:
    """Parse (and strictly check) the literal data of a signature."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureError(f"signature payload is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "critical" not in doc:
        raise SignatureError("signature payload has no critical section")
    unknown = set(doc) - {"critical", "optional"}
    if unknown:
        raise SignatureError(f"signature payload has unknown keys {sorted(unknown)}")
    critical = _exact_keys(doc["critical"], {"type", "image", "identity"}, "critical")
    if critical["type"] != SIGNATURE_TYPE:
        raise SignatureError(f"signature type {critical['type']!r} is not {SIGNATURE_TYPE!r}")
    image = _exact_keys(critical["image"], {"docker-manifest-digest"}, "critical.image")
    identity = _exact_keys(critical["identity"], {"docker-reference"}, "critical.identity")
    try:
        digest = validate_digest(str(image["docker-manifest-digest"]), "docker-manifest-digest")
        ref = normalize(parse(str(identity["docker-reference"])))
    except CrioError as exc:
        raise SignatureError(f"signature payload: {exc}") from None
    optional = doc.get("optional") or {}
    if not isinstance(optional, dict):
        raise SignatureError("signature payload: optional is not an object")
    timestamp = optional.get("timestamp", 0)
    return SignedPayload(
        manifest_digest=digest,
        docker_reference=ref,
        creator=str(optional.get("creator", "")),
        timestamp=timestamp if isinstance(timestamp, int) else 0,
    )


def _remove_home(path: str) -> None:
    # Public-key-only homes never start an agent (--no-autostart), so there is
    # nothing to stop; just remove the directory.
    shutil.rmtree(path, ignore_errors=True)


class Keyring:
    """A private, temporary GPG home holding only the trusted public keys.

    Verification runs ``gpg --no-autostart`` against it, so it never starts an
    agent. The directory goes away with the object.
    """

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._home = tempfile.mkdtemp(prefix="crio-gpg-")
        weakref.finalize(self, _remove_home, self._home)
        import gnupg  # only policies with signedBy requirements get here

        self._gpg = gnupg.GPG(gnupghome=self._home, options=["--no-autostart"])
        self._lock = threading.Lock()
        fingerprints: set[str] = set()
        for key in keys:
            result = self._gpg.import_keys(key)
            if not result.fingerprints:
                raise SignatureError("a trusted key is not a valid OpenPGP public key")
            fingerprints.update(result.fingerprints)
        self.fingerprints = frozenset(fingerprints)

    def verify(self, signature: bytes) -> tuple[bytes, str]:
        """Check ``signature`` against the keyring; return (payload, signer fingerprint).

        :raises SignatureError: not signed by a key of this keyring, or not valid.
        """
        with self._lock:
            result = self._gpg.decrypt(signature)
        signer = result.pubkey_fingerprint or result.fingerprint or ""
        if not result.valid:
            if result.status == "no public key":
                raise SignatureError(f"signed by key {result.key_id}, which is not trusted")
            raise SignatureError(
                f"invalid signature: {result.status or 'not an OpenPGP signature'}"
            )
        if signer not in self.fingerprints and result.fingerprint not in self.fingerprints:
            raise SignatureError(f"signed by key {signer}, which is not trusted")
        return bytes(result.data), signer


def sign(payload: bytes, key_id: str, gnupg_home: str | None = None) -> bytes:
    """Sign ``payload`` with the secret key ``key_id`` from the user's GPG home.

    :raises SignatureError: gpg could not sign (unknown key, locked key ...).
    """
    import gnupg

    home = gnupg_home or os.environ.get("GNUPGHOME") or None
    gpg = gnupg.GPG(gnupghome=home)
    result = gpg.sign(payload, keyid=key_id, binary=True, clearsign=False, detach=False)
    if not result.data or result.status != "signature created":
        raise SignatureError(
            f"gpg could not sign with key {key_id}: {result.status or result.stderr}"
        )
    return bytes(result.data)
