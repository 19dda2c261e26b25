"""Throw-away GPG homes with a signing key, for signature tests (real gpg, no agent leak)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gnupg

__all__ = ["GpgKey", "gpg_key"]


@dataclass(frozen=True)
class GpgKey:
    home: Path
    fingerprint: str
    public: bytes  # binary OpenPGP public key

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public)
        return path


@contextmanager
def gpg_key(email: str = "signer@crio.test") -> Iterator[GpgKey]:
    """A new ed25519 signing key in a private home; its gpg-agent is stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="crio-gpghome-", dir="/tmp"))
    home.chmod(0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    try:
        spec = gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            key_usage="sign",
            name_email=email,
            no_protection=True,
        )
        key = gpg.gen_key(spec)
        assert key.fingerprint, key.stderr
        yield GpgKey(home, key.fingerprint, gpg.export_keys(key.fingerprint, armor=False))
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
