"""Sizes written the Kubernetes way: 512Mi, 10Gi, 1G, or plain bytes."""

from __future__ import annotations

SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes in ``text``; binary multiples for k/m/g/t with or without i/iB. ValueError if bad."""
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    suffix = value[-1:] if value[-1:] in SIZE_SUFFIXES else ""
    number = value[: len(value) - len(suffix)]
    if not number.isdigit():
        raise ValueError(f"not a size: {text!r} (try 10Gi)")
    return int(number) * SIZE_SUFFIXES[suffix]
