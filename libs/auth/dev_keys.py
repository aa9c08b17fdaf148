"""Key pairs for development and tests, made by `tiket up` (or `tiket keys dev`) under
`.tiket/keys/`:

    issuer.pem            the development identity provider's private key: `tiket token`
                          signs with it; no service process is given it
    issuer.jwks.json      its public half (TIKET_JWKS)
    services/<name>.pem   each service's own key (TIKET_SERVICE_KEY, {service} = its name)
    services.jwks.json    the services' public halves (TIKET_SERVICE_JWKS)

Every key id starts with `dev/`, so a service outside TIKET_ENV=development/test refuses
them. Production keys: an OIDC provider's JWKS, and `tiket keys service NAME` per service.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from libs.auth.keys import (
    ISSUER_OWNER,
    KeyMaterialError,
    jwk_entry,
    key_id,
    load_private_key,
    new_private_key,
    write_jwks,
    write_private,
)
from libs.auth.principal import Role
from libs.auth.tokens import TokenSigner, audience

DEV_ISSUER = "tiket-dev"
ISSUER_KEY = "issuer.pem"
ISSUER_JWKS = "issuer.jwks.json"
SERVICE_KEYS = "services"
SERVICE_JWKS = "services.jwks.json"


def ensure_dev_keys(directory: Path, services: Iterable[str]) -> list[str]:
    """Make the keys under `directory` that are missing (kept ones are reused, so running
    services keep trusting them); return the names of the keys made."""
    made = []
    issuer_path = directory / ISSUER_KEY
    if not issuer_path.exists():
        write_private(issuer_path, new_private_key())
        made.append(ISSUER_KEY)
    issuer = load_private_key(issuer_path)
    _write_if_changed(
        directory / ISSUER_JWKS, [jwk_entry(issuer, key_id(issuer, ISSUER_OWNER, dev=True))]
    )
    entries = []
    for name in sorted(set(services)):
        path = directory / SERVICE_KEYS / f"{name}.pem"
        if not path.exists():
            write_private(path, new_private_key())
            made.append(f"{SERVICE_KEYS}/{name}.pem")
        key = load_private_key(path)
        entries.append(jwk_entry(key, key_id(key, name, dev=True)))
    _write_if_changed(directory / SERVICE_JWKS, entries)
    return made


def _write_if_changed(path: Path, entries: list[dict[str, str]]) -> None:
    try:
        if json.loads(path.read_text()).get("keys") == entries:
            return
    except (OSError, ValueError):
        pass
    write_jwks(path, entries)


def dev_issuer(key_path: Path) -> TokenSigner:
    """The development identity provider, signing with the key at `key_path`."""
    try:
        key = load_private_key(key_path)
    except KeyMaterialError as exc:
        raise KeyMaterialError(
            f"{exc}: make the development keys with `tiket keys dev` (tiket up does it), "
            "or pass a token from your identity provider"
        ) from None
    return TokenSigner(key, key_id(key, ISSUER_OWNER, dev=True), DEV_ISSUER)


def dev_token(
    key_path: Path, role: Role | str, subject: str, services: Iterable[str], ttl_seconds: int
) -> str:
    """A token from the development identity provider, valid at every one of `services`."""
    return dev_issuer(key_path).mint(
        role, subject, [audience(name) for name in services], ttl_seconds
    )
