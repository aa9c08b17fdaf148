"""What one service process needs of libs/auth, built from its Settings: the verifier of
the tokens it is called with, and the signer of the calls it makes as itself."""

from __future__ import annotations

from dataclasses import dataclass

from libs.auth.keys import (
    KeyMaterialError,
    KeyRefresher,
    KeySet,
    is_dev_kid,
    load_private_key,
    public_jwk,
    service_of,
)
from libs.auth.tokens import TokenSigner, TokenVerifier, audience, service_issuer
from libs.config import Settings


class IdentityError(RuntimeError):
    """The service's keys are missing or not fit for its environment; says what to do."""


@dataclass
class ServiceIdentity:
    """The trust of one service: who may call it, and how it calls others."""

    name: str
    settings: Settings
    issuer_keys: KeySet
    service_keys: KeySet
    _signer: TokenSigner | None = None

    @classmethod
    def load(cls, name: str, settings: Settings) -> ServiceIdentity:
        """Read both key sets now; IdentityError when one cannot be read, or holds development
        keys outside TIKET_ENV=development/test."""
        sets = []
        for variable, location in (
            ("TIKET_JWKS", settings.jwks),
            ("TIKET_SERVICE_JWKS", settings.service_jwks),
        ):
            keys = KeySet(location)
            try:
                keys.load()
            except KeyMaterialError as exc:
                raise IdentityError(f"{variable}: {exc}{_HINT}") from None
            _refuse_dev_keys(settings, variable, keys.kids)
            sets.append(keys)
        return cls(name, settings, sets[0], sets[1])

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(
            audience=audience(self.name),
            issuer=self.settings.token_issuer,
            issuer_keys=self.issuer_keys,
            service_keys=self.service_keys,
            max_lifetime_seconds=self.settings.token_max_lifetime_seconds,
        )

    def refresher(self) -> KeyRefresher:
        return KeyRefresher(
            [self.issuer_keys, self.service_keys], self.settings.jwks_refresh_seconds
        )

    def signer(self) -> TokenSigner:
        """The key this service signs its calls with, found in the services' key set by its
        public half (so its kid is the one callees know). Loaded on first use: a service that
        calls nobody needs no key."""
        if self._signer is None:
            self._signer = self._load_signer()
        return self._signer

    def _load_signer(self) -> TokenSigner:
        path = self.settings.service_key_path(self.name)
        try:
            key = load_private_key(path)
        except KeyMaterialError as exc:
            raise IdentityError(f"TIKET_SERVICE_KEY: {exc}{_HINT}") from None
        for kid in self.service_keys.kids_of(public_jwk(key)):
            if service_of(kid) == self.name:
                _refuse_dev_keys(self.settings, "TIKET_SERVICE_KEY", [kid])
                return TokenSigner(key, kid, service_issuer(self.name))
        raise IdentityError(
            f"the public half of {path} is not in TIKET_SERVICE_JWKS under a kid "
            f"'{self.name}/…': callees would refuse this service's calls; add it "
            f"(`tiket keys service {self.name}` prints the entry)"
        )


_HINT = " (development: `tiket keys dev` makes them, `tiket up` does it for you)"


def _refuse_dev_keys(settings: Settings, variable: str, kids: list[str]) -> None:
    if settings.allows_development_defaults:
        return
    dev = [kid for kid in kids if is_dev_kid(kid)]
    if dev:
        raise IdentityError(
            f"{variable} holds development keys ({', '.join(dev)}), refused unless "
            "TIKET_ENV=development or test: use your identity provider's JWKS and keys "
            "made with `tiket keys service NAME`"
        )
