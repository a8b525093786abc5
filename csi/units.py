"""Sizes read from text, as Kubernetes reads a quantity.

``Mi``, ``Gi``, ``Ti`` (and ``Ki``, ``Pi``, ``Ei``) are powers of 1024; ``k``, ``M``, ``G``,
``T``, ``P``, ``E`` powers of 1000; a plain number is bytes and may carry a decimal
exponent (``1e9``). So ``40M`` is 40,000,000 bytes and ``40Mi`` is 41,943,040. Fractions
work (``1.5Gi``, ``0.5G``), and a result that is not a whole number of bytes (``500m`` is
half a byte) is rounded up, as Kubernetes rounds a volume's size. Negative, non-numeric and
unknown forms (``10GB``, ``1K``, ``1_000``) are refused with ValueError.

The arithmetic is the ``kubernetes`` client's own parser; the grammar check in front of it
keeps to Kubernetes' spelling, which the Python parser alone is laxer about. Its module is
loaded on its own (it needs only ``decimal``): importing ``kubernetes.utils`` would load the
whole API client, some 46 MiB and most of a second at start, for one function.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

# Sign, digits with an optional fraction, then one suffix: binary, decimal or an exponent.
QUANTITY = re.compile(
    r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?", re.ASCII
)
# Kubernetes keeps quantities in an int64; nothing larger is a size.
MAX_BYTES = 2**63 - 1
EXAMPLE = "e.g. 10Gi, 512Mi or 1G"


@functools.cache
def _quantity_parser() -> Callable[[str], Decimal]:
    """``kubernetes.utils.quantity.parse_quantity``, without running the package's imports.
    (The client ships no type hints; this is the signature it documents.)"""
    package = importlib.util.find_spec("kubernetes")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the kubernetes client package is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "utils" / "quantity.py"
    spec = importlib.util.spec_from_file_location("csi._kubernetes_quantity", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser: Callable[[str], Decimal] = module.parse_quantity
    return parser


def parse_size(text: str) -> int:
    """Bytes in ``text`` (rounded up to a whole byte); ValueError says why it is not a size."""
    quantity = text.strip()
    if not QUANTITY.fullmatch(quantity):
        raise ValueError(f"not a size: {text!r} ({EXAMPLE})")
    try:
        value = _quantity_parser()(quantity)
    except ValueError:  # an exponent beyond what Decimal holds
        raise ValueError(f"not a size: {text!r} ({EXAMPLE})") from None
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    if value > MAX_BYTES:
        raise ValueError(f"size too large: {text!r} (at most {MAX_BYTES} bytes)")
    return int(value.to_integral_value(rounding=ROUND_CEILING))
