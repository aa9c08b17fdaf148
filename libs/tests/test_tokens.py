"""libs.auth tokens: ES256 signatures checked against key sets, issuer, audience and lifetime;
subjects of the shape each role needs; a service's key signs only its own service tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest

from libs.auth import Principal, Role
from libs.auth.keys import (
    KeySet,
    jwk_entry,
    key_id,
    new_private_key,
    public_jwk,
    write_jwks,
)
from libs.auth.principal import check_subject
from libs.auth.tokens import TokenSigner, TokenVerifier, audience, service_issuer
from libs.errors import Unauthenticated

ISSUER = "https://id.example.test/realms/tiket"


class Keys:
    """An identity provider and two services, with their key sets on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.idp = self._signer("issuer", ISSUER)
        self.journey = self._signer("journey", service_issuer("journey"))
        self.notification = self._signer("notification", service_issuer("notification"))
        self.issuer_jwks = directory / "issuer.jwks.json"
        self.service_jwks = directory / "services.jwks.json"
        write_jwks(self.issuer_jwks, [jwk_entry(self.idp.key, self.idp.kid)])
        write_jwks(
            self.service_jwks,
            [jwk_entry(s.key, s.kid) for s in (self.journey, self.notification)],
        )

    @staticmethod
    def _signer(owner: str, issuer: str) -> TokenSigner:
        key = new_private_key()
        return TokenSigner(key, key_id(key, owner, dev=False), issuer)

    def signed(self, claims: dict) -> str:
        """`claims` signed by the identity provider as they are (no claim added)."""
        return jwt.encode(claims, self.idp.key, algorithm="ES256", headers={"kid": self.idp.kid})

    def verifier(self, service: str = "user", **kwargs) -> TokenVerifier:
        issuer_keys, service_keys = KeySet(str(self.issuer_jwks)), KeySet(str(self.service_jwks))
        issuer_keys.load()
        service_keys.load()
        return TokenVerifier(
            audience=audience(service),
            issuer=ISSUER,
            issuer_keys=issuer_keys,
            service_keys=service_keys,
            max_lifetime_seconds=kwargs.pop("max_lifetime_seconds", 3600),
            **kwargs,
        )


def admin_claims(**changes: object) -> dict:
    """The claims of a valid admin token for the user service, with `changes`."""
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "ops", "aud": "tiket-user", "role": "admin"}
    return {**claims, "iat": now, "exp": now + 60, **changes}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


USER_ID = "b741ac64-7546-45ad-aa37-6391def0af8e"  # fixed: it names parametrized tests
ISSUED = [
    (Role.ADMIN, "ops@example"),
    (Role.OPERATOR, "op-7"),
    (Role.GATE, "A/A-ENTRY-01"),
    (Role.USER, USER_ID),
]


@pytest.mark.parametrize(("role", "subject"), ISSUED)
def test_issued_tokens_verify(keys: Keys, role: Role, subject: str) -> None:
    token = keys.idp.mint(role, subject, audience("user"), 600)
    assert keys.verifier().verify(token) == Principal(role, subject)


def test_a_token_names_key_issuer_audience_and_lifetime(keys: Keys) -> None:
    token = keys.idp.mint(Role.GATE, "A/A-ENTRY-01", [audience("fare"), audience("user")], 60)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == keys.idp.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ["tiket-fare", "tiket-user"]
    assert claims["exp"] - claims["iat"] == 60
    assert claims["jti"]


def test_a_service_signs_its_own_service_tokens(keys: Keys) -> None:
    token = keys.journey.mint(Role.SERVICE, "journey", audience("user"), 300)
    assert keys.verifier().verify(token) == Principal(Role.SERVICE, "journey")


@pytest.mark.parametrize(
    ("role", "subject"),
    [(Role.ADMIN, "root"), (Role.USER, USER_ID), (Role.GATE, "A/A-ENTRY-01")],
)
def test_a_service_key_cannot_sign_anyone_else(keys: Keys, role: Role, subject: str) -> None:
    # A compromised journey service holds its key: it must not become admin or a rider.
    token = keys.journey.mint(role, subject, audience("user"), 300)
    with pytest.raises(Unauthenticated, match="signs only its own service tokens"):
        keys.verifier().verify(token)


def test_a_service_key_cannot_speak_for_another_service(keys: Keys) -> None:
    token = keys.notification.mint(Role.SERVICE, "journey", audience("user"), 300)
    with pytest.raises(Unauthenticated, match="signs only its own"):
        keys.verifier().verify(token)


def test_the_identity_provider_does_not_issue_service_tokens(keys: Keys) -> None:
    token = keys.idp.mint(Role.SERVICE, "journey", audience("user"), 300)
    with pytest.raises(Unauthenticated, match="services sign with their own key"):
        keys.verifier().verify(token)


def test_a_token_for_another_service_is_refused(keys: Keys) -> None:
    token = keys.idp.mint(Role.ADMIN, "ops", audience("fare"), 300)
    assert keys.verifier("fare").verify(token).role is Role.ADMIN
    with pytest.raises(Unauthenticated, match=r"not for this service.*tiket-user"):
        keys.verifier("user").verify(token)


def test_expired_wrong_issuer_and_too_long_lived_tokens(keys: Keys) -> None:
    verifier = keys.verifier(max_lifetime_seconds=3600)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(keys.idp.mint(Role.ADMIN, "ops", audience("user"), -120))
    stranger = TokenSigner(keys.idp.key, keys.idp.kid, "https://evil.example")
    with pytest.raises(Unauthenticated, match="issuer"):
        verifier.verify(stranger.mint(Role.ADMIN, "ops", audience("user"), 60))
    with pytest.raises(Unauthenticated, match="longer than the 3600 s"):
        verifier.verify(keys.idp.mint(Role.ADMIN, "ops", audience("user"), 7200))


def test_a_tampered_token_is_refused(keys: Keys) -> None:
    token = keys.idp.mint(Role.USER, USER_ID, audience("user"), 60)
    head, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["role"] = "admin"
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        keys.verifier().verify(f"{head}.{forged}.{signature}")


def test_unknown_keys_and_tokens_without_a_kid_are_refused(keys: Keys) -> None:
    outsider = TokenSigner(new_private_key(), "issuer/outsider", ISSUER)
    with pytest.raises(Unauthenticated, match="unknown key"):
        keys.verifier().verify(outsider.mint(Role.ADMIN, "ops", audience("user"), 60))
    no_kid = jwt.encode(admin_claims(), keys.idp.key, algorithm="ES256")
    with pytest.raises(Unauthenticated, match="no signing key"):
        keys.verifier().verify(no_kid)


def test_symmetric_and_unsigned_tokens_are_refused(keys: Keys) -> None:
    claims = admin_claims()
    # The classic confusion: HS256 keyed with the (public) verification key.
    public = json.dumps(public_jwk(keys.idp.key)).encode()
    confused = _hand_made({"alg": "HS256", "kid": keys.idp.kid}, claims, public)
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": keys.idp.kid})
    for token in (confused, unsigned):
        with pytest.raises(Unauthenticated, match="not accepted"):
            keys.verifier().verify(token)


def _hand_made(header: dict, claims: dict, secret: bytes) -> str:
    """An HS256 token PyJWT would refuse to make with an asymmetric-looking secret."""
    encode = jwt.utils.base64url_encode
    signing_input = b".".join(encode(json.dumps(part).encode()) for part in (header, claims))
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + encode(signature)).decode()


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "aud", "sub"])
def test_required_claims(keys: Keys, missing: str) -> None:
    claims = admin_claims()
    del claims[missing]
    token = keys.signed(claims)
    with pytest.raises(Unauthenticated):
        keys.verifier().verify(token)


@pytest.mark.parametrize(
    ("role", "subject", "message"),
    [
        (Role.USER, "", "empty subject"),
        (Role.ADMIN, "", "empty subject"),
        (Role.USER, "u1", "user id"),
        (Role.USER, USER_ID.upper(), "user id"),
        (Role.GATE, "A-ENTRY-01", "TERMINAL/GATE"),
        (Role.GATE, "A/", "TERMINAL/GATE"),
        (Role.SERVICE, "Journey!", "service name"),
        (Role.OPERATOR, "x" * 65, "1-64 printable"),
        (Role.OPERATOR, "two words", "1-64 printable"),
    ],
)
def test_malformed_subjects_are_refused(role: Role, subject: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        check_subject(role, subject)


def test_an_empty_subject_token_is_refused(keys: Keys) -> None:
    token = keys.idp.mint(Role.USER, "", audience("user"), 60)
    with pytest.raises(Unauthenticated, match="empty subject"):
        keys.verifier().verify(token)


def test_unknown_role(keys: Keys) -> None:
    token = keys.signed(admin_claims(role="root"))
    with pytest.raises(Unauthenticated, match="unknown role"):
        keys.verifier().verify(token)


# --- key rotation ----------------------------------------------------------------------------


def test_a_rotated_key_set_file_is_picked_up(keys: Keys, monkeypatch) -> None:
    verifier = keys.verifier()
    old = keys.idp.mint(Role.ADMIN, "ops", audience("user"), 600)
    assert verifier.verify(old).subject == "ops"
    new_key = new_private_key()
    rotated = TokenSigner(new_key, key_id(new_key, "issuer", dev=False), ISSUER)
    # The provider publishes the new key and retires the old one.
    write_jwks(keys.issuer_jwks, [jwk_entry(new_key, rotated.kid)])
    monkeypatch.setattr("libs.auth.keys.FILE_CHECK_SECONDS", 0.0)
    assert verifier.verify(rotated.mint(Role.ADMIN, "ops", audience("user"), 600)).subject == "ops"
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.verify(old)


def test_a_broken_rewrite_keeps_the_keys_it_had(keys: Keys, monkeypatch) -> None:
    verifier = keys.verifier()
    token = keys.idp.mint(Role.ADMIN, "ops", audience("user"), 600)
    monkeypatch.setattr("libs.auth.keys.FILE_CHECK_SECONDS", 0.0)
    keys.issuer_jwks.write_text("{ not json")
    assert verifier.verify(token).subject == "ops"


# --- the verifier's memory -------------------------------------------------------------------


def test_the_verifier_remembers_valid_tokens_until_they_expire(keys: Keys, monkeypatch) -> None:
    verifier = keys.verifier()
    token = keys.journey.mint(Role.SERVICE, "journey", audience("user"), 60)
    assert verifier.from_metadata(f"Bearer {token}").subject == "journey"
    # Retire the key: a remembered token is still accepted while it lives...
    monkeypatch.setattr("libs.auth.keys.FILE_CHECK_SECONDS", 0.0)
    write_jwks(keys.service_jwks, [])
    assert verifier.from_metadata(f"Bearer {token}").subject == "journey"
    # ...and checked again once past its expiry: now its key is gone.
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Unauthenticated, match="unknown key"):
        verifier.from_metadata(f"Bearer {token}")


def test_the_verifier_memory_is_bounded(keys: Keys) -> None:
    verifier = keys.verifier(max_entries=5)
    subjects = [str(uuid.uuid4()) for _ in range(12)]
    tokens = [keys.idp.mint(Role.USER, s, audience("user"), 60) for s in subjects]
    for subject, token in zip(subjects, tokens, strict=True):
        assert verifier.from_metadata(f"Bearer {token}").subject == subject
    assert len(verifier._known) <= 5
    assert verifier.from_metadata(f"Bearer {tokens[0]}").subject == subjects[0]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("Bearer", "Bearer <jwt>"),
        ("Bearer ", "Bearer <jwt>"),
        ("Basic dXNlcjpwYXNz", "Bearer <jwt>"),
        ("Bearer not.a.jwt", "invalid token"),
        ("Bearer garbage", "invalid token"),
        ("Bearer 💥💥💥", "invalid token"),
    ],
)
def test_missing_or_garbage_bearer(keys: Keys, authorization: str | None, message: str) -> None:
    verifier = keys.verifier()
    for _ in range(2):  # a refusal is not remembered as a success
        with pytest.raises(Unauthenticated, match=message.replace("<", ".").replace(">", ".")):
            verifier.from_metadata(authorization)
