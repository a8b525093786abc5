"""Sizes read from text, as Kubernetes reads a quantity.

``Mi``, ``Gi``, ``Ti`` (and ``Ki``, ``Pi``, ``Ei``) are powers of 1024; ``k``, ``M``, ``G``,
``T``, ``P``, ``E`` powers of 1000; a plain number is bytes and may carry a decimal
exponent (``1e9``). So ``40M`` is 40,000,000 bytes and ``40Mi`` is 41,943,040. Fractions
work (``1.5Gi``, ``0.5G``), and a result that is not a whole number of bytes (``500m`` is
half a byte) is rounded up, as Kubernetes rounds a volume's size. Negative, non-numeric and
unknown forms (``10GB``, ``1K``, ``1_000``) are refused with ValueError.

Kubernetes' own parser (apimachinery's resource.Quantity; in Python the ``kubernetes``
client's ``parse_quantity``) is the reference, but the client cannot ride along: it is some
126 MiB with a closure of 27 packages (aiohttp, pydantic, requests...) in an image that needs
none of them, and importing it costs 46 MiB and most of a second at start. So the grammar and
the arithmetic, a dozen lines, are here, and the unit tests hold them to the client's parser
on every form (tests/unit/test_units.py, generated inputs).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

# Sign, digits with an optional fraction, then one suffix: binary, decimal or an exponent.
QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?",
    re.ASCII,
)
BINARY = {p + "i": Decimal(1024) ** (n + 1) for n, p in enumerate("KMGTPE")}
DECIMAL = {
    p: Decimal(1000) ** e for p, e in zip("numkMGTPE", (-3, -2, -1, 1, 2, 3, 4, 5, 6), strict=True)
}
# Kubernetes keeps quantities in an int64; nothing larger is a size.
MAX_BYTES = 2**63 - 1
MAX_EXPONENT = 40  # beyond any int64 whatever the digits before it; refused before computing
EXAMPLE = "e.g. 10Gi, 512Mi or 1G"


def quantity(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity; ValueError if ``text`` is not one."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} ({EXAMPLE})")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in BINARY:
        return number * BINARY[suffix]
    if suffix in DECIMAL:
        return number * DECIMAL[suffix]
    if suffix and number:
        exponent = int(suffix[1:])
        if exponent > MAX_EXPONENT:
            raise ValueError(f"size too large: {text!r} (at most {MAX_BYTES} bytes)")
        # Below -MAX_EXPONENT any size rounds up to one byte all the same.
        return number.scaleb(max(exponent, -MAX_EXPONENT))
    return number


def parse_size(text: str) -> int:
    """Bytes in ``text`` (rounded up to a whole byte); ValueError says why it is not a size."""
    value = quantity(text.strip())
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    if value > MAX_BYTES:
        raise ValueError(f"size too large: {text!r} (at most {MAX_BYTES} bytes)")
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def show_size(size: int) -> str:
    """``size`` as a user wrote it in a claim: the largest binary suffix that divides it
    exactly (``16Mi``, ``20Gi``), then the bytes (``16Mi (16777216 bytes)``); a size no
    suffix divides is bytes alone. For messages: the claim's text and the exact number."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(BINARY[suffix])
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix} ({size} bytes)"
    return f"{size} bytes"
