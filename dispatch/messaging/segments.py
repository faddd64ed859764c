"""How many SMS parts a text takes (3GPP TS 23.038): GSM-7 when every character has a GSM-7 code, else UCS-2.

GSM-7: 160 septets in one message, 153 per part once split (the rest is the concatenation header); the
extension characters (``{ } [ ] ~ \\ | ^ €`` and form feed) take an escape septet too, and an escape pair is
never split across parts. UCS-2: 70 UTF-16 code units in one message, 67 per part; a character outside the
BMP (an emoji) is a surrogate pair that is never split. Chinese text is always UCS-2.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    parts: int


def _sizes(text: str) -> tuple[str, list[int], int, int]:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "GSM-7", [2 if c in GSM7_EXTENSION else 1 for c in text], GSM7_SINGLE, GSM7_PART
    return "UCS-2", [2 if ord(c) > 0xFFFF else 1 for c in text], UCS2_SINGLE, UCS2_PART


def count(text: str) -> Segments:
    """The encoding, size and number of parts of ``text`` as one SMS (an empty text is one part)."""
    encoding, sizes, single, part = _sizes(text)
    units = sum(sizes)
    if units <= single:
        return Segments(encoding, units, 1)
    parts, used = 1, 0
    for size in sizes:  # greedy fill: a character (escape pair, surrogate pair) never straddles two parts
        if used + size > part:
            parts, used = parts + 1, 0
        used += size
    return Segments(encoding, units, parts)
