"""Signing keys and the public key sets (JWKS) that verify them.

Key ids name whose key it is: a service's key is `journey/<thumbprint>`, so a token signed
with it can only be that service's; keys made for development carry a `dev/` prefix
(`dev/journey/…`, `dev/issuer/…`) and are refused outside development and test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from libs.auth.principal import SERVICE_NAME

log = logging.getLogger(__name__)

DEV_PREFIX = "dev/"
ISSUER_OWNER = "issuer"
# How often a JWKS file is looked at for a change (one stat), at most.
FILE_CHECK_SECONDS = 1.0


class KeyMaterialError(ValueError):
    """A key or key set cannot be read; the message says which and what to do."""


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key for ES256."""
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyMaterialError(f"no signing key at {path}") from None
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyMaterialError(
            f"{path}: tiket signs with ES256, so the key must be an EC P-256 key"
        )
    return key


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public half as a JWK (no kid)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"]}


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint of an EC JWK, base64url."""
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def key_id(key: ec.EllipticCurvePrivateKey, owner: str, *, dev: bool) -> str:
    """`[dev/]owner/<thumbprint>`: the same key always gets the same id."""
    return f"{DEV_PREFIX if dev else ''}{owner}/{thumbprint(public_jwk(key))[:16]}"


def service_of(kid: str) -> str | None:
    """The service a key id belongs to (`journey` of `journey/…` or `dev/journey/…`)."""
    parts = kid.removeprefix(DEV_PREFIX).split("/")
    if len(parts) == 2 and parts[0] != ISSUER_OWNER and SERVICE_NAME.fullmatch(parts[0]):
        return parts[0]
    return None


def is_dev_kid(kid: str) -> bool:
    return kid.startswith(DEV_PREFIX)


def jwk_entry(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, str]:
    return {**public_jwk(key), "kid": kid, "use": "sig", "alg": "ES256"}


def write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(key))
    tmp.replace(path)


def write_jwks(path: Path, entries: list[dict[str, str]]) -> None:
    """Replace the JWKS at `path` in one step, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": entries}, indent=2) + "\n")
    tmp.replace(path)


def _parse(data: Mapping[str, object], where: str) -> dict[str, tuple[jwt.PyJWK, dict]]:
    """kid -> (key, its JWK) of every usable signing key of a JWKS document."""
    entries = data.get("keys")
    if not isinstance(entries, list):
        raise KeyMaterialError(f"{where} is not a JWKS: it needs a 'keys' list")
    found: dict[str, tuple[jwt.PyJWK, dict]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue  # a key nobody can name cannot be chosen by a token
        try:
            found[kid] = (jwt.PyJWK(entry), entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            log.warning("%s: key %s is not a usable public key; skipped", where, kid)
    return found


class KeySet:
    """The public keys of one JWKS, by kid, read from a file (looked at again at most once a
    second, reloaded when it changed) or an http(s) URL (fetched by `refresh()`, which
    `KeyRefresher` runs periodically and soon after a token names an unknown key)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.is_url = location.startswith(("http://", "https://"))
        self._keys: dict[str, tuple[jwt.PyJWK, dict]] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.wanted = asyncio.Event()  # a token named a key we do not have

    def load(self) -> None:
        """Read the set now; KeyMaterialError saying what is wrong when it cannot be read."""
        if self.is_url:
            self._keys = _parse(_fetch(self.location), self.location)
        else:
            self._reload_file(force=True)

    def get(self, kid: str) -> jwt.PyJWK | None:
        if not self.is_url:
            now = time.monotonic()
            if now - self._checked >= FILE_CHECK_SECONDS:
                self._checked = now
                self._reload_file(force=False)
        found = self._keys.get(kid)
        if found is None and self.is_url:
            self.wanted.set()
        return found[0] if found else None

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def kids_of(self, public: Mapping[str, str]) -> list[str]:
        """The kids under which the set holds the public key `public` (a JWK)."""
        return [
            kid
            for kid, (_, entry) in self._keys.items()
            if all(entry.get(name) == value for name, value in public.items())
        ]

    async def refresh(self) -> None:
        keys = await asyncio.to_thread(lambda: _parse(_fetch(self.location), self.location))
        self._keys = keys

    def _reload_file(self, *, force: bool) -> None:
        path = Path(self.location)
        try:
            info = path.stat()
        except FileNotFoundError:
            if force:
                raise KeyMaterialError(f"no JWKS at {path}") from None
            return
        stamp = (info.st_mtime, info.st_size)
        if stamp == self._stamp and not force:
            return
        try:
            self._keys = _parse(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as exc:
            if force:
                raise KeyMaterialError(f"{path} cannot be read as a JWKS: {exc}") from None
            log.warning("%s changed but cannot be read (%s); keeping the keys it had", path, exc)
            return
        self._stamp = stamp
        log.info("key set loaded", extra={"jwks": str(path), "kids": self.kids})


def _fetch(url: str) -> dict[str, object]:
    try:
        return jwt.PyJWKClient(url, cache_jwk_set=False, timeout=5).fetch_data()
    except jwt.PyJWKClientError as exc:
        raise KeyMaterialError(f"cannot fetch the JWKS at {url}: {exc}") from None


class KeyRefresher:
    """Background task keeping URL key sets fresh: every `interval` seconds, and within
    `cooldown` seconds after a token named a key the set does not have (key rotation)."""

    def __init__(self, sets: list[KeySet], interval: float, cooldown: float = 10.0) -> None:
        self.sets = [s for s in sets if s.is_url]
        self.interval = interval
        self.cooldown = cooldown
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep_fresh(s)) for s in self.sets]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _keep_fresh(self, keys: KeySet) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval):
                    await keys.wanted.wait()
            except TimeoutError:
                pass
            keys.wanted.clear()
            try:
                await keys.refresh()
            except KeyMaterialError as exc:
                log.warning("%s; keeping the keys it had", exc)
            await asyncio.sleep(self.cooldown)
