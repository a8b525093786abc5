"""csi.units.parse_size: sizes read as Kubernetes reads quantities."""

from __future__ import annotations

import pytest

from csi.units import MAX_BYTES, parse_size

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
        "1e9999999999999999999999999",
    ],
)
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["-1", "-1Gi", "-0.5"])
def test_negative_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_size(text)


@pytest.mark.parametrize("text", [str(MAX_BYTES + 1), "8Ei", "1e99999999999"])
def test_sizes_beyond_int64(text: str) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size(text)


def test_the_driver_never_loads_the_kubernetes_client() -> None:
    # A fresh interpreter: what the driver's start-up and a size parse load. The client
    # package costs some 46 MiB and most of a second; only its quantity module is used.
    import subprocess
    import sys

    code = (
        "import sys, csi.server, csi.cli, csi.units; csi.units.parse_size('1Gi'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
