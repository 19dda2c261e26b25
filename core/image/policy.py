"""``policy.json``: which images may be pulled (containers-policy.json(5)).

::

    {"default": [{"type": "reject"}],
     "transports": {"docker": {
         "registry.example.com/team": [{
             "type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/team.gpg",
             "signedIdentity": {"type": "matchRepoDigestOrExact"}}],
         "docker.io": [{"type": "insecureAcceptAnything"}]}}}

The most specific scope of the image's transport wins (the full reference,
then its repository, each parent namespace, the host, ``*.``-wildcarded
domains), then the transport's ``""`` scope, then ``default``. Every
requirement of the chosen list must accept the image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crio.errors import ConfigError, CrioError, PermissionDeniedError
from crio.image.reference import Reference, normalize, parse
from crio.image.signature import Keyring, SignatureError, parse_payload

__all__ = [
    "DEFAULT_POLICY",
    "IdentityRule",
    "InsecureAcceptAnything",
    "Policy",
    "PolicyImage",
    "PolicyRejectedError",
    "Reject",
    "SignedBy",
    "load",
    "parse_policy",
]

DEFAULT_POLICY = "/etc/containers/policy.json"


class PolicyRejectedError(PermissionDeniedError):
    """The signature policy does not allow the image."""


# ---------------------------------------------------------------------------
# Identity rules: does the reference a signature names fit the image's?


@dataclass(frozen=True, slots=True)
class IdentityRule:
    type: str
    reference: Reference | None = None  # exactReference / exactRepository
    prefix: str = ""  # remapIdentity
    signed_prefix: str = ""

    def matches(self, image: Reference | None, signed: Reference) -> bool:
        if self.type == "exactReference":
            assert self.reference is not None
            return _exact(self.reference, signed)
        if self.type == "exactRepository":
            assert self.reference is not None
            return signed.name == self.reference.name
        if image is None:
            return False
        if self.type == "matchExact":
            return _exact(image, signed)
        if self.type == "matchRepository":
            return image.name == signed.name
        if self.type == "remapIdentity":
            image = _remap(image, self.prefix, self.signed_prefix)
        # matchRepoDigestOrExact (and remapIdentity after the rewrite)
        if image.digest:
            return image.name == signed.name
        if image.tag:
            return _exact(image, signed)
        return False


def _exact(a: Reference, b: Reference) -> bool:
    return bool(a.tag or a.digest) and str(a) == str(b)


def _remap(image: Reference, prefix: str, signed_prefix: str) -> Reference:
    name = image.name
    if name == prefix or name.startswith(prefix + "/"):
        return normalize(parse(signed_prefix + str(image)[len(prefix) :]))
    return image


# ---------------------------------------------------------------------------
# Requirements


@dataclass(frozen=True, slots=True)
class PolicyImage:
    """What a requirement may look at; signatures are fetched only when needed."""

    transport: str
    reference: Reference | None
    manifest_digest: str
    signatures: Callable[[], Awaitable[Sequence[bytes]]]


@dataclass(frozen=True, slots=True)
class InsecureAcceptAnything:
    async def check(self, image: PolicyImage) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Reject:
    async def check(self, image: PolicyImage) -> None:
        raise PolicyRejectedError("policy requirement 'reject': images are rejected here")


@dataclass(slots=True)
class SignedBy:
    key_data: tuple[bytes, ...]
    identity: IdentityRule
    source: str = ""
    _keyring: Keyring | None = field(default=None, repr=False)

    def keyring(self) -> Keyring:
        if self._keyring is None:
            try:
                self._keyring = Keyring(self.key_data)
            except SignatureError as exc:
                raise ConfigError(str(exc), key=self.source) from None
        return self._keyring

    async def check(self, image: PolicyImage) -> None:
        signatures = await image.signatures()
        if not signatures:
            raise PolicyRejectedError(
                "policy requirement 'signedBy': a signature was required, but no signature exists"
            )
        keyring = await asyncio.to_thread(self.keyring)
        reasons = []
        for i, blob in enumerate(signatures, 1):
            try:
                payload, _signer = await asyncio.to_thread(keyring.verify, blob)
                signed = parse_payload(payload)
                if signed.manifest_digest != image.manifest_digest:
                    raise SignatureError(
                        f"signature is for manifest {signed.manifest_digest}, "
                        f"not {image.manifest_digest}"
                    )
                if not self.identity.matches(image.reference, signed.docker_reference):
                    raise SignatureError(
                        f"signature is for {signed.docker_reference}, which does not match "
                        f"{image.reference or 'the image'} ({self.identity.type})"
                    )
                return
            except SignatureError as exc:
                reasons.append(f"signature {i}: {exc}")
        raise PolicyRejectedError(
            "policy requirement 'signedBy': no acceptable signature: " + "; ".join(reasons)
        )


Requirement = InsecureAcceptAnything | Reject | SignedBy


# ---------------------------------------------------------------------------
# The policy


def _scopes(transport: str, identity: str, reference: Reference | None) -> list[str]:
    scopes = [identity]
    if transport in ("docker", "atomic") and reference is not None:
        parts = reference.name.split("/")
        scopes += ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
        labels = reference.domain.rsplit(":", 1)[0].split(".")
        scopes += ["*." + ".".join(labels[n:]) for n in range(1, len(labels))]
    elif identity.startswith("/"):
        path = identity.rsplit(":", 1)[0] if ":" in identity else identity
        scopes.append(path)
        while "/" in path.strip("/"):
            path = path.rsplit("/", 1)[0]
            scopes.append(path)
        scopes.append("/")
    return list(dict.fromkeys(scopes))


@dataclass(frozen=True, slots=True)
class Policy:
    default: tuple[Requirement, ...]
    transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]] = field(default_factory=dict)
    source: str = ""

    def requirements(
        self, transport: str, identity: str, reference: Reference | None = None
    ) -> tuple[str, tuple[Requirement, ...]]:
        """The scope that applies and its requirements."""
        scopes = self.transports.get(transport) or {}
        for scope in _scopes(transport, identity, reference):
            if scope in scopes:
                return f"transports.{transport}.{scope!r}", scopes[scope]
        if "" in scopes:
            return f"transports.{transport}.''", scopes[""]
        return "default", self.default

    async def check(self, image: PolicyImage, identity: str) -> None:
        """Raise :class:`PolicyRejectedError` naming the scope and the requirement that failed."""
        scope, requirements = self.requirements(image.transport, identity, image.reference)
        for requirement in requirements:
            try:
                await requirement.check(image)
            except PolicyRejectedError as exc:
                where = self.source or "policy.json"
                raise PolicyRejectedError(
                    f"image {identity} rejected by {where} ({scope}): {exc}"
                ) from None


def _bad(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(message, file=source, key=key)


def _identity(obj: Any, source: str, key: str) -> IdentityRule:
    if obj is None:
        return IdentityRule("matchRepoDigestOrExact")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise _bad(source, key, "expected an object with a type")
    kind = obj["type"]
    try:
        if kind in ("matchExact", "matchRepoDigestOrExact", "matchRepository"):
            return IdentityRule(kind)
        if kind == "exactReference":
            ref = normalize(parse(str(obj["dockerReference"])))
            if not (ref.tag or ref.digest):
                raise _bad(source, key, "exactReference needs a tag or digest")
            return IdentityRule(kind, reference=ref)
        if kind == "exactRepository":
            return IdentityRule(kind, reference=normalize(parse(str(obj["dockerRepository"]))))
        if kind == "remapIdentity":
            prefix, signed = str(obj["prefix"]), str(obj["signedPrefix"])
            for value in (prefix, signed):
                parse(value if "/" in value else value + "/x")
            return IdentityRule(kind, prefix=prefix, signed_prefix=signed)
    except KeyError as exc:
        raise _bad(source, key, f"{kind} needs {exc.args[0]}") from None
    except CrioError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise _bad(source, key, str(exc)) from None
    raise _bad(source, f"{key}.type", f"unknown signedIdentity type {kind!r}")


def _signed_by(obj: dict[str, Any], source: str, key: str, base: Path) -> SignedBy:
    if obj.get("keyType") != "GPGKeys":
        raise _bad(source, f"{key}.keyType", f"{obj.get('keyType')!r} is not supported (GPGKeys)")
    given = [k for k in ("keyPath", "keyPaths", "keyData") if k in obj]
    if len(given) != 1:
        raise _bad(source, key, "needs exactly one of keyPath, keyPaths, keyData")
    keys: list[bytes] = []
    if "keyData" in obj:
        try:
            keys.append(base64.b64decode(str(obj["keyData"]), validate=True))
        except binascii.Error:
            raise _bad(source, f"{key}.keyData", "is not base64") from None
    else:
        paths = [obj["keyPath"]] if "keyPath" in obj else obj["keyPaths"]
        if not isinstance(paths, list) or not paths:
            raise _bad(source, f"{key}.keyPaths", "expected a non-empty list")
        for path in paths:
            file = base / str(path)
            try:
                keys.append(file.read_bytes())
            except OSError as exc:
                raise _bad(
                    source, f"{key}.keyPath", f"cannot read {file}: {exc.strerror}"
                ) from None
    identity = _identity(obj.get("signedIdentity"), source, f"{key}.signedIdentity")
    return SignedBy(tuple(keys), identity, source=f"{source}: {key}")


def _requirements(value: Any, source: str, key: str, base: Path) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise _bad(source, key, "expected a non-empty list of requirements")
    out: list[Requirement] = []
    for i, obj in enumerate(value):
        rkey = f"{key}[{i}]"
        if not isinstance(obj, dict):
            raise _bad(source, rkey, "expected an object")
        kind = obj.get("type")
        if kind == "insecureAcceptAnything":
            out.append(InsecureAcceptAnything())
        elif kind == "reject":
            out.append(Reject())
        elif kind == "signedBy":
            out.append(_signed_by(obj, source, rkey, base))
        elif kind in ("sigstoreSigned", "signedBaseLayer"):
            raise _bad(source, f"{rkey}.type", f"{kind!r} is not supported by crio")
        else:
            raise _bad(source, f"{rkey}.type", f"unknown requirement type {kind!r}")
    return tuple(out)


def parse_policy(
    text: str | bytes, source: str = "policy.json", base: Path | None = None
) -> Policy:
    """Parse policy.json; relative key paths are taken from ``base``."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", file=source) from None
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", file=source)
    unknown = set(doc) - {"default", "transports"}
    if unknown:
        raise _bad(source, sorted(unknown)[0], "unknown key; expected default or transports")
    if "default" not in doc:
        raise _bad(source, "default", "is missing")
    base = base or Path(source).parent
    default = _requirements(doc["default"], source, "default", base)
    transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    for name, scopes in (doc.get("transports") or {}).items():
        if not isinstance(scopes, dict):
            raise _bad(source, f"transports.{name}", "expected an object of scopes")
        transports[name] = {
            scope: _requirements(reqs, source, f"transports.{name}.{scope}", base)
            for scope, reqs in scopes.items()
        }
    if "atomic" in transports and "docker" not in transports:
        transports["docker"] = transports["atomic"]
    return Policy(default, transports, source)


def load(path: str | Path = "") -> Policy:
    """Read policy.json; a missing file is an error (as in containers/image: no policy, no pull)."""
    file = Path(path or DEFAULT_POLICY)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("signature policy file does not exist", file=str(file)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from None
    return parse_policy(text, str(file), file.parent)
