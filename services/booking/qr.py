"""The QR payload a clinic scans at arrival: a JWT signed with the booking service's own
key (ES256, its kid in the services' key set), so a clinic's scanner checks it offline
against the published keys and nobody can forge or alter one. Its audience is no service's:
it is never accepted as a bearer token. A PNG of it for the rider comes from segno."""

from __future__ import annotations

import io
from datetime import timedelta

import jwt
import segno

from libs.auth.tokens import TokenSigner
from services.booking.domain import Booking

AUDIENCE = "tiket-clinic-arrival"
# A payload stays valid until a day after the visit's end (late arrivals, disputes).
VALID_AFTER_END = timedelta(days=1)


def payload(booking: Booking, signer: TokenSigner) -> str:
    claims = {
        "iss": signer.issuer,
        "aud": AUDIENCE,
        "sub": str(booking.id),
        "clinic": str(booking.clinic_id),
        "slot": str(booking.slot_id),
        "start": int(booking.slot_start.timestamp()),
        "iat": int(booking.updated_at.timestamp()),
        "exp": int((booking.slot_end + VALID_AFTER_END).timestamp()),
    }
    return jwt.encode(claims, signer.key, algorithm="ES256", headers={"kid": signer.kid})


def png(text: str, scale: int = 5) -> bytes:
    """The QR code of `text` as a PNG image."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale)
    return out.getvalue()
