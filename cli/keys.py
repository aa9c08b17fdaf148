"""`tiket token` and `tiket keys …`: tokens for grpcurl and scripts, and the key pairs that
sign them.

- `tiket token --role R --sub S` prints a token from the development identity provider
  (`.tiket/keys/issuer.pem`), valid at every service. In production tokens come from your
  OIDC provider; the CLI's own calls then take one from TIKET_TOKEN.
- `tiket keys dev` makes the development keys (`tiket up` does it when they are missing).
- `tiket keys service NAME --out DIR` makes a production key pair for one service: the
  private key for that service's secret, and the JWK entry for TIKET_SERVICE_JWKS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from libs.auth import Role
from libs.auth.dev_keys import dev_token, ensure_dev_keys
from libs.auth.keys import (
    KeyMaterialError,
    jwk_entry,
    key_id,
    new_private_key,
    write_private,
)
from libs.auth.principal import SERVICE_NAME, check_subject
from libs.config import SERVICE_PORTS, Settings, load
from libs.errors import Unauthenticated

TOKEN_ENV = "TIKET_TOKEN"


def register(commands: argparse._SubParsersAction) -> None:
    token = commands.add_parser("token", help="print a signed JWT (for grpcurl and scripts)")
    token.add_argument("--role", required=True, choices=[r.value for r in Role if r != "service"])
    token.add_argument(
        "--sub",
        required=True,
        help="subject: a user id (user), TERMINAL/GATE (gate, e.g. A/A-ENTRY-01), a name (staff)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument(
        "--aud",
        nargs="+",
        metavar="SERVICE",
        choices=sorted(SERVICE_PORTS),
        help="services the token is for (default: every one)",
    )
    token.set_defaults(run=_token)

    keys = commands.add_parser("keys", help="make signing keys (development or one service's)")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    dev = actions.add_parser("dev", help="make the development keys under TIKET_STATE_DIR/keys")
    dev.set_defaults(run=lambda args, settings: ensure_development_keys(settings, print))
    service = actions.add_parser("service", help="make a production key pair for one service")
    service.add_argument("name", help="the service's name, e.g. journey")
    service.add_argument("--out", type=Path, required=True, help="folder for NAME.pem")
    service.set_defaults(run=_service_key)


def development_keys_dir(settings: Settings) -> Path | None:
    """The folder of the development keys when the settings use them (the defaults), else
    None: keys configured elsewhere are not ours to make."""
    defaults = load({"TIKET_STATE_DIR": settings.state_dir})
    if (settings.jwks, settings.service_jwks, settings.service_key) != (
        defaults.jwks,
        defaults.service_jwks,
        defaults.service_key,
    ):
        return None
    return Path(settings.dev_issuer_key).parent


def ensure_development_keys(settings: Settings, out=print) -> None:
    """Make the missing development keys, when the settings use them."""
    directory = development_keys_dir(settings)
    if directory is None:
        out("tiket: TIKET_JWKS/TIKET_SERVICE_JWKS/TIKET_SERVICE_KEY are set: no keys made")
        return
    made = ensure_dev_keys(directory, SERVICE_PORTS)
    if made:
        out(f"tiket: made development keys in {directory}/: {', '.join(made)}")


def cli_token(settings: Settings, role: Role, subject: str, ttl_seconds: int = 600) -> str:
    """The token the CLI's own calls carry: TIKET_TOKEN when set, else one from the
    development identity provider."""
    if given := os.environ.get(TOKEN_ENV, "").strip():
        return given
    return dev_cli_token(settings, role, subject, ttl_seconds)


def dev_cli_token(settings: Settings, role: Role, subject: str, ttl_seconds: int = 600) -> str:
    """A token from the development identity provider, valid at every service."""
    try:
        return dev_token(Path(settings.dev_issuer_key), role, subject, SERVICE_PORTS, ttl_seconds)
    except KeyMaterialError as exc:
        sys.exit(f"tiket: {exc} (or set {TOKEN_ENV})")


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _token(args: argparse.Namespace, settings: Settings) -> None:
    try:  # the services' own rule: a token they would refuse is not printed
        check_subject(Role(args.role), args.sub)
    except Unauthenticated as exc:
        sys.exit(f"tiket: --sub {args.sub!r}: {exc.message}")
    if args.ttl < 1:
        sys.exit(f"tiket: --ttl {args.ttl}: a token must live at least 1 second")
    if args.ttl > settings.token_max_lifetime_seconds:
        sys.exit(
            f"tiket: --ttl {args.ttl} is longer than the services accept "
            f"(TIKET_TOKEN_MAX_LIFETIME_SECONDS={settings.token_max_lifetime_seconds})"
        )
    try:
        token = dev_token(
            Path(settings.dev_issuer_key),
            args.role,
            args.sub,
            args.aud or SERVICE_PORTS,
            args.ttl,
        )
    except KeyMaterialError as exc:
        sys.exit(f"tiket: {exc}")
    print(token)


def _service_key(args: argparse.Namespace, settings: Settings) -> None:
    if not SERVICE_NAME.fullmatch(args.name):
        sys.exit(f"tiket: {args.name!r} is not a service name (lower-case letters, digits, -)")
    path = args.out / f"{args.name}.pem"
    if path.exists():
        sys.exit(f"tiket: {path} exists; remove it first to make a new key")
    key = new_private_key()
    try:
        write_private(path, key)
    except OSError as exc:
        sys.exit(f"tiket: cannot write {path}: {exc.strerror or exc}; choose another --out")
    entry = jwk_entry(key, key_id(key, args.name, dev=False))
    print(
        f"private key: {path} (mount it as TIKET_SERVICE_KEY of {args.name} only)", file=sys.stderr
    )
    print("add this entry to the 'keys' of TIKET_SERVICE_JWKS:", file=sys.stderr)
    print(json.dumps(entry, indent=2))
