"""JWT bearer tokens, signed asymmetrically (ES256; EdDSA and RS256 from an identity provider
are verified too), never with a shared secret.

Two kinds of signer, two key sets a service trusts:

- the **identity provider** (an OIDC issuer in production; `tiket token` with the development
  key in `.tiket/keys/` otherwise) issues `admin`, `operator`, `gate` and `user` tokens;
  services hold only its public keys (`TIKET_JWKS`) and its name (`TIKET_TOKEN_ISSUER`);
- each **service** signs the calls it makes with a key of its own (`TIKET_SERVICE_KEY`); the
  callee trusts that key (`TIKET_SERVICE_JWKS`, kid `journey/…`) for role `service` with
  subject `journey` only, so a compromised service can be neither `admin` nor a rider.

Every token names its audience: `tiket-<callee>` (a token for the fare service is refused by
the user service), its issuer, and a lifetime no longer than the verifier's maximum.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from libs.auth.keys import KeySet, service_of
from libs.auth.principal import ISSUED_ROLES, Principal, Role, check_subject
from libs.errors import Unauthenticated

# Asymmetric only: HS* would let whoever verifies also sign, "none" anyone.
ALGORITHMS = frozenset({"ES256", "EdDSA", "RS256"})
SERVICE_TOKEN_TTL_SECONDS = 300
# Clock skew tolerated between signer and verifier.
LEEWAY_SECONDS = 30


def audience(service: str) -> str:
    """What a token for service `service` carries in `aud`."""
    return f"tiket-{service}"


def service_issuer(service: str) -> str:
    """The `iss` of the tokens service `service` signs with its own key."""
    return f"tiket-{service}"


@dataclass(frozen=True)
class TokenSigner:
    """A private key, its kid and the issuer it signs as."""

    key: ec.EllipticCurvePrivateKey
    kid: str
    issuer: str

    def mint(
        self, role: Role | str, subject: str, audiences: str | Sequence[str], ttl_seconds: int
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audiences if isinstance(audiences, str) else list(audiences),
            "role": str(Role(role)),
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})


class TokenVerifier:
    """Checks bearer tokens for one service (`audience`), with a bounded memory of tokens
    already verified until they expire: gates and services send the same token on thousands
    of calls, and an ES256 verification costs more than the rest of a cache-hit RPC."""

    def __init__(
        self,
        *,
        audience: str,
        issuer: str,
        issuer_keys: KeySet,
        service_keys: KeySet,
        max_lifetime_seconds: float,
        max_entries: int = 10_000,
    ) -> None:
        self.audience = audience
        self.issuer = issuer
        self.issuer_keys = issuer_keys
        self.service_keys = service_keys
        self.max_lifetime_seconds = max_lifetime_seconds
        self.max_entries = max_entries
        self._known: dict[str, tuple[Principal, float]] = {}

    def from_metadata(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        known = self._known.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        principal, expires = self._verify(token)
        if len(self._known) >= self.max_entries:
            self._known.clear()
        self._known[token] = (principal, expires)
        return principal

    def verify(self, token: str) -> Principal:
        return self._verify(token)[0]

    def _verify(self, token: str) -> tuple[Principal, float]:
        """(principal, expiry as a UNIX time) of a valid token; Unauthenticated otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("invalid token: its header names no signing key (kid)")
        owner = service_of(kid)
        key = self.service_keys.get(kid) if owner else None
        if key is not None and owner is not None:
            issuer = service_issuer(owner)
        else:
            owner, key, issuer = None, self.issuer_keys.get(kid), self.issuer
        if key is None:
            raise Unauthenticated(f"invalid token: signed with unknown key {kid[:80]!r}")
        if key.algorithm_name not in ALGORITHMS or header.get("alg") != key.algorithm_name:
            raise Unauthenticated(f"invalid token: algorithm {header.get('alg')!r} not accepted")
        claims = self._decode(token, key, issuer)
        return self._principal(claims, owner), float(claims["exp"])

    def _decode(self, token: str, key: jwt.PyJWK, issuer: str) -> dict:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "token expired: mint a new one (tiket token --role … --sub …)"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"token is not for this service: its aud must include {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"token issuer is not {issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("invalid token: the signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, int | float) or lifetime > self.max_lifetime_seconds:
            raise Unauthenticated(
                f"token lives longer than the {self.max_lifetime_seconds:g} s allowed: "
                "mint one with a shorter lifetime"
            )
        return claims

    @staticmethod
    def _principal(claims: dict, owner: str | None) -> Principal:
        try:
            role = Role(claims.get("role"))
        except ValueError:
            raise Unauthenticated(f"token has unknown role {claims.get('role')!r}") from None
        subject = check_subject(role, claims["sub"])
        if owner is not None:  # signed with a service's own key
            if role is not Role.SERVICE or subject != owner:
                raise Unauthenticated(
                    f"the key of service {owner!r} signs only its own service tokens"
                )
        elif role not in ISSUED_ROLES:
            raise Unauthenticated(
                f"role {role} is not issued by {claims['iss']!r}: services sign with their own key"
            )
        return Principal(role=role, subject=subject)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing token: send 'authorization: Bearer <jwt>' metadata")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization metadata must be 'Bearer <jwt>'")
    return token.strip()
