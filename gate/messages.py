"""What the rider reads on the gate's screen: OPEN or CLOSED and why, in Indonesian by default
or English. Reasons are the journey service's google.rpc.ErrorInfo reasons plus the gate's
own offline ones."""

from __future__ import annotations

from decimal import Decimal

from libs.money import rupiah

# reason -> (Indonesian, English)
REFUSALS: dict[str, tuple[str, str]] = {
    "INSUFFICIENT_BALANCE": (
        "Saldo tidak cukup. Silakan isi ulang saldo.",
        "Insufficient balance. Please top up your card.",
    ),
    "USER_NOT_ACTIVE": (
        "Kartu diblokir atau tidak aktif. Hubungi petugas.",
        "This card is blocked or inactive. Please contact staff.",
    ),
    "UNKNOWN_CARD": (
        "Kartu tidak dikenal. Hubungi petugas.",
        "Card not recognised. Please contact staff.",
    ),
    "WRONG_GATE_TYPE": (
        "Gerbang salah arah. Gunakan gerbang yang lain.",
        "Wrong gate for this direction. Please use another gate.",
    ),
    "DIRECTION_REQUIRED": (
        "Pilih arah: masuk atau keluar.",
        "Choose a direction: in or out.",
    ),
    "GATE_OUT_OF_SERVICE": (
        "Gerbang sedang tidak beroperasi. Gunakan gerbang lain.",
        "This gate is out of service. Please use another gate.",
    ),
    "GATE_NOT_REGISTERED": (
        "Gerbang ini belum terdaftar. Hubungi petugas.",
        "This gate is not registered. Please contact staff.",
    ),
    "GATE_ERROR": (
        "Gerbang bermasalah. Hubungi petugas.",
        "This gate has a fault. Please contact staff.",
    ),
    "TERMINAL_CLOSED": ("Terminal sedang tutup.", "This terminal is closed."),
    "NO_FARE": (
        "Tarif untuk perjalanan ini tidak tersedia. Hubungi petugas.",
        "No fare is set for this trip. Please contact staff.",
    ),
    "TAP_EXPIRED": ("Tap kedaluwarsa. Silakan tap ulang.", "Tap expired. Please tap again."),
    "ALREADY_CHECKED_IN": (
        "Kartu sudah tap masuk. Silakan lanjutkan perjalanan.",
        "Already checked in. Please go ahead.",
    ),
    "ALREADY_CHECKED_OUT": (
        "Kartu sudah tap keluar.",
        "Already checked out.",
    ),
    "TOO_MANY_OFFLINE_TAPS": (
        "Batas tap saat gerbang offline tercapai. Hubungi petugas.",
        "Too many taps while this gate is offline. Please contact staff.",
    ),
    "NO_SNAPSHOT": (
        "Gerbang belum siap memeriksa kartu tanpa jaringan. Hubungi petugas.",
        "This gate cannot check cards without the network yet. Please contact staff.",
    ),
    "SNAPSHOT_STALE": (
        "Gerbang offline terlalu lama dan tidak dapat memeriksa kartu. Hubungi petugas.",
        "This gate has been offline too long to check cards. Please contact staff.",
    ),
}
REFUSED = ("Tap ditolak. Hubungi petugas.", "Tap refused. Please contact staff.")


def refusal(reason: str, lang: str) -> str:
    texts = REFUSALS.get(reason, REFUSED)
    return texts[0] if lang == "id" else texts[1]


def welcome(check_in: bool, amount: Decimal | None, lang: str) -> str:
    """The text of an open gate; `amount` is what was held (entry) or charged (exit)."""
    if check_in:
        text = ("Silakan masuk.", "Please enter.")[lang != "id"]
        if amount is not None:
            held = ("Saldo ditahan sementara", "Held on your card")[lang != "id"]
            text += f" {held}: {rupiah(amount)}."
        return text
    text = ("Terima kasih. Silakan keluar.", "Thank you. Please exit.")[lang != "id"]
    if amount is not None:
        fare = ("Tarif", "Fare")[lang != "id"]
        text += f" {fare}: {rupiah(amount)}."
    return text
