"""csi.units.parse_size: sizes read as Kubernetes reads quantities."""

from __future__ import annotations

import subprocess
import sys
from decimal import ROUND_CEILING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csi.units import MAX_BYTES, parse_size, quantity

KI, MI, GI, TI = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40M", 40 * 10**6),  # M is 10^6, as every Kubernetes user reads it
        ("40Mi", 40 * MI),
        ("1.5Gi", GI + GI // 2),
        ("0.5G", 500 * 10**6),
        ("1e9", 10**9),
        ("1E3", 1000),
        ("2k", 2000),
        ("1Ki", KI),
        ("16Ti", 16 * TI),
        ("1T", 10**12),
        ("1Pi", 2**50),
        ("1E", 10**18),
        ("4096", 4096),
        ("0", 0),
        ("+1Gi", GI),
        (".5Ki", 512),
        ("  64Mi\n", 64 * MI),
        # Not a whole byte: rounded up, as Kubernetes rounds a volume's size.
        ("500m", 1),
        ("1500m", 2),
        ("0.1Ki", 103),
        ("1n", 1),
        (str(MAX_BYTES), MAX_BYTES),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "Gi",
        "bad",
        "1 0",
        "10GB",  # not Kubernetes' spelling
        "1GiB",
        "1gi",
        "3mi",
        "1K",
        "1ki",
        "1Qi",
        "1_000",
        "0x10",
        "NaN",
        "Infinity",
        "inf",
        "1e3Mi",
        "1e",
        "١٢",  # digits of another script
    ],
)
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["-1", "-1Gi", "-0.5"])
def test_negative_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_size(text)


@pytest.mark.parametrize(
    "text", [str(MAX_BYTES + 1), "8Ei", "1e99999999999", "1e9999999999999999999999999"]
)
def test_sizes_beyond_int64(text: str) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size(text)


def test_the_driver_never_loads_the_kubernetes_client() -> None:
    # A fresh interpreter: what the driver's start-up and a size parse load.
    code = (
        "import sys, csi.server, csi.cli, csi.units; csi.units.parse_size('1Gi'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


NUMBERS = st.from_regex(r"\A[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})\Z")
SUFFIXES = st.sampled_from(
    ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
) | st.builds(
    lambda e, sign: f"{e}{sign}", st.sampled_from(["e", "E"]), st.sampled_from(["", "+", "-"])
).flatmap(lambda prefix: st.integers(0, 30).map(lambda n: f"{prefix}{n}"))


@settings(max_examples=2000, deadline=None)
@given(number=NUMBERS, suffix=SUFFIXES)
def test_the_same_value_as_kubernetes_parser(number: str, suffix: str) -> None:
    """Held to the reference: the kubernetes client's parse_quantity, rounded up."""
    from kubernetes.utils import parse_quantity  # tests may load the client

    text = number + suffix
    reference = parse_quantity(text)
    assert quantity(text) == reference
    if 0 <= reference <= MAX_BYTES:
        assert parse_size(text) == int(reference.to_integral_value(rounding=ROUND_CEILING))
