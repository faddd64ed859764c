"""Chinese mobile numbers, checked and normalised to E.164 with phonenumbers."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType


class InvalidPhone(ValueError):
    pass


def normalise_cn_mobile(raw: str) -> str:
    """``13800138000``, ``+86 138-0013-8000`` … → ``+8613800138000``; anything but a CN mobile raises."""
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone("Not a phone number.") from exc
    if number.country_code != 86 or not phonenumbers.is_valid_number(number):
        raise InvalidPhone("Not a valid Chinese mobile number.")
    if phonenumbers.number_type(number) not in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise InvalidPhone("Not a valid Chinese mobile number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """``+8613800138000`` → ``+86138****8000`` for lists and logs."""
    return e164[:-8] + "****" + e164[-4:] if len(e164) >= 11 else "****"
