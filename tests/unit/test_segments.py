"""SMS segment counting (dispatch/messaging/segments.py) against worked vectors of 3GPP TS 23.038."""

from __future__ import annotations

import pytest

from dispatch.messaging.segments import Segments, count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segments("GSM-7", 0, 1)),
        ("a" * 160, Segments("GSM-7", 160, 1)),
        ("a" * 161, Segments("GSM-7", 161, 2)),
        ("a" * 306, Segments("GSM-7", 306, 2)),
        ("a" * 307, Segments("GSM-7", 307, 3)),
        ("€" * 80, Segments("GSM-7", 160, 1)),  # extension characters take two septets
        ("€" * 81, Segments("GSM-7", 162, 2)),
        ("a" * 152 + "€", Segments("GSM-7", 154, 1)),
        # 152 septets + an escape pair that would straddle the 153-septet boundary: it moves to part 2.
        ("a" * 152 + "€" + "a" * 152, Segments("GSM-7", 306, 3)),
        ("a" * 153 + "€" + "a" * 151, Segments("GSM-7", 306, 2)),
        ("Hello {name} [ok] ^_^ ~ | \\", Segments("GSM-7", 36, 1)),  # 27 characters, 9 of them escaped
        ("你" * 70, Segments("UCS-2", 70, 1)),
        ("你" * 71, Segments("UCS-2", 71, 2)),
        ("你" * 134, Segments("UCS-2", 134, 2)),
        ("你" * 135, Segments("UCS-2", 135, 3)),
        ("Hello 你好", Segments("UCS-2", 8, 1)),  # one character outside GSM-7 makes the whole text UCS-2
        ("ç", Segments("UCS-2", 1, 1)),  # GSM-7 has Ç but not ç
        ("😀" * 35, Segments("UCS-2", 70, 1)),  # a surrogate pair is two code units
        ("😀" * 36, Segments("UCS-2", 72, 2)),
        ("a" * 66 + "😀" + "你" * 66, Segments("UCS-2", 134, 3)),  # the pair is not split at unit 67
    ],
)
def test_segment_vectors(text: str, expected: Segments) -> None:
    assert count(text) == expected
