"""Chinese mobile numbers, checked and normalised to E.164 with phonenumbers."""

from __future__ import annotations

import functools

import phonenumbers
from phonenumbers import PhoneNumberType

_MOBILE = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


class InvalidPhone(ValueError):
    pass


@functools.lru_cache(maxsize=1024)
def normalise_cn_mobile(raw: str) -> str:
    """``13800138000``, ``+86 138-0013-8000`` … → ``+8613800138000``; anything but a CN mobile raises.

    A pure function of ``raw``, memoised: the intake schema checks a number (``@validates``, so its error is
    reported beside the other fields') and then stores its normal form (``post_load``), which parsed it
    twice. Invalid numbers raise and are not cached.
    """
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone("Not a phone number.") from exc
    # For +86 (one region, CN) a number is valid exactly when its type is known, so the type test alone
    # also rejects invalid numbers (phonenumbers' is_valid_number would compute the same type first).
    if number.country_code != 86 or phonenumbers.number_type(number) not in _MOBILE:
        raise InvalidPhone("Not a valid Chinese mobile number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """``+8613800138000`` → ``+86138****8000`` for lists and logs."""
    return e164[:-8] + "****" + e164[-4:] if len(e164) >= 11 else "****"
