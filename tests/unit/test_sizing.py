"""csi.volumes.sizing: capacity ranges -> volume sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.config import GIB, MIB, TIB, Config
from csi.errors import InvalidArgument, OutOfRange
from csi.layout import Layout
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec
from csi.volumes.ledger import SpaceLedger
from csi.volumes.sizing import available_capacity, choose_size, fits, minimum_size

EXT4 = VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4")
XFS = VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "xfs")
BLOCK = VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, "")
DIRECTORY = VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config("localvol.csi.dev", "node", tmp_path, f"unix://{tmp_path}/csi.sock")


def record(capacity: int, phase: Phase = Phase.READY) -> VolumeRecord:
    return VolumeRecord(
        "vol-1", "n", VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, ""), capacity, 0.0, phase
    )


@pytest.mark.parametrize("spec", [EXT4, XFS, BLOCK, DIRECTORY])
def test_default_size(config: Config, spec: VolumeSpec) -> None:
    assert choose_size(0, 0, spec, config) == config.default_volume_size == GIB


def test_limit_caps_default(config: Config) -> None:
    assert choose_size(0, 100 * MIB, EXT4, config) == 100 * MIB
    assert choose_size(0, 5, DIRECTORY, config) == 5


@pytest.mark.parametrize(
    ("required", "expected"),
    [(20 * MIB, 20 * MIB), (20 * MIB + 1, 21 * MIB), (21 * MIB - 1, 21 * MIB), (1, 16 * MIB)],
)
def test_loop_rounds_up_to_mib(config: Config, required: int, expected: int) -> None:
    assert choose_size(required, 0, EXT4, config) == expected


def test_block_minimum_is_one_mib(config: Config) -> None:
    assert choose_size(1, 0, BLOCK, config) == MIB
    assert choose_size(MIB + 1, 0, BLOCK, config) == 2 * MIB


def test_directory_is_not_rounded(config: Config) -> None:
    assert choose_size(12345, 0, DIRECTORY, config) == 12345


def test_xfs_minimum(config: Config) -> None:
    assert minimum_size(XFS) == 300 * MIB
    assert choose_size(MIB, 0, XFS, config) == 300 * MIB
    assert choose_size(MIB, 300 * MIB, XFS, config) == 300 * MIB


def test_minimum_sizes() -> None:
    assert minimum_size(EXT4) == 16 * MIB
    assert minimum_size(BLOCK) == MIB
    assert minimum_size(DIRECTORY) == 1


@pytest.mark.parametrize(("spec", "limit"), [(XFS, 100 * MIB), (EXT4, 15 * MIB), (BLOCK, MIB - 1)])
def test_limit_below_minimum_is_out_of_range(config: Config, spec: VolumeSpec, limit: int) -> None:
    with pytest.raises(OutOfRange):
        choose_size(0, limit, spec, config)


def test_required_above_limit(config: Config) -> None:
    with pytest.raises(InvalidArgument, match="exceeds limit_bytes"):
        choose_size(2 * GIB, GIB, EXT4, config)


@pytest.mark.parametrize(("required", "limit"), [(-1, 0), (0, -1), (-GIB, GIB)])
def test_negative(config: Config, required: int, limit: int) -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        choose_size(required, limit, DIRECTORY, config)


def test_beyond_max_volume_size(config: Config) -> None:
    with pytest.raises(OutOfRange, match="maximum"):
        choose_size(17 * TIB, 0, EXT4, config)
    assert choose_size(16 * TIB, 0, EXT4, config) == 16 * TIB


@pytest.mark.parametrize(
    ("required", "limit", "expected"),
    [
        (0, 20 * MIB + 1, 20 * MIB),
        (16 * MIB, 20 * MIB + 1, 16 * MIB),
        (20 * MIB, 20 * MIB + MIB - 1, 20 * MIB),
        (0, 16 * MIB + 5, 16 * MIB),
    ],
)
def test_unaligned_limit_rounds_down_within_range(
    config: Config, required: int, limit: int, expected: int
) -> None:
    # Regression: an unaligned limit_bytes used to be rounded up past the limit (OUT_OF_RANGE).
    size = choose_size(required, limit, EXT4, config)
    assert size == expected
    assert required <= size <= limit


def test_no_whole_mib_inside_range(config: Config) -> None:
    with pytest.raises(OutOfRange):
        choose_size(20 * MIB + 1, 20 * MIB + 100, EXT4, config)


def test_fits() -> None:
    volume = record(GIB)
    assert fits(volume, 0, 0)
    assert fits(volume, GIB, GIB)
    assert fits(volume, MIB, 2 * GIB)
    assert not fits(volume, GIB + 1, 0)
    assert not fits(volume, 0, GIB - 1)


def ledger_of(tmp_path: Path, records: list[VolumeRecord]) -> SpaceLedger:
    ledger = SpaceLedger(Layout(tmp_path))
    ledger.reset(records)
    return ledger


def test_available_capacity_with_limit(tmp_path: Path) -> None:
    config = Config("d", "n", tmp_path, "unix:///x", capacity_limit=10 * GIB)
    volumes = [record(3 * GIB), record(4 * GIB, Phase.DELETING), record(GIB, Phase.CREATING)]
    unlimited = available_capacity(config, ledger_of(tmp_path, []))
    assert available_capacity(config, ledger_of(tmp_path, volumes)) == min(6 * GIB, unlimited)
    assert available_capacity(config, ledger_of(tmp_path, [record(11 * GIB)])) == 0
