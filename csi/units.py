"""Sizes read from text, as Kubernetes reads a quantity.

``Mi``, ``Gi``, ``Ti`` (and ``Ki``, ``Pi``, ``Ei``) are powers of 1024; ``k``, ``M``, ``G``,
``T``, ``P``, ``E`` powers of 1000; a plain number is bytes and may carry a decimal
exponent (``1e9``). So ``40M`` is 40,000,000 bytes and ``40Mi`` is 41,943,040. Fractions
work (``1.5Gi``, ``0.5G``), and a result that is not a whole number of bytes (``500m`` is
half a byte) is rounded up, as Kubernetes rounds a volume's size. Negative, non-numeric and
unknown forms (``10GB``, ``1K``, ``1_000``) are refused with ValueError.

The arithmetic is the ``kubernetes`` client's own parser; the grammar check in front of it
keeps to Kubernetes' spelling, which the Python parser alone is laxer about.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal

from kubernetes.utils import parse_quantity as _untyped_parse_quantity

# Sign, digits with an optional fraction, then one suffix: binary, decimal or an exponent.
QUANTITY = re.compile(
    r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?", re.ASCII
)
# Kubernetes keeps quantities in an int64; nothing larger is a size.
MAX_BYTES = 2**63 - 1
EXAMPLE = "e.g. 10Gi, 512Mi or 1G"

# The client ships no type hints; this is the signature it documents.
_parse_quantity: Callable[[str], Decimal] = _untyped_parse_quantity


def parse_size(text: str) -> int:
    """Bytes in ``text`` (rounded up to a whole byte); ValueError says why it is not a size."""
    quantity = text.strip()
    if not QUANTITY.fullmatch(quantity):
        raise ValueError(f"not a size: {text!r} ({EXAMPLE})")
    try:
        value = _parse_quantity(quantity)
    except ValueError:  # an exponent beyond what Decimal holds
        raise ValueError(f"not a size: {text!r} ({EXAMPLE})") from None
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    if value > MAX_BYTES:
        raise ValueError(f"size too large: {text!r} (at most {MAX_BYTES} bytes)")
    return int(value.to_integral_value(rounding=ROUND_CEILING))
