"""Loop devices are identified by their backing file's device and inode, not its name.

A fake sysfs and /dev under tmp_path, and a fake LOOP_GET_STATUS64 that answers for the
fake device node it is called on (in the kernel's own encoding of the device number), so
the scan, the struct layout and the matching rules run without root or a loop device.
tests/integration/test_loop_identity.py checks the same against the real kernel.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi.host import kernel, loopdev
from csi.host.errors import LoopDeviceUnreadable
from csi.host.loopdev import LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY, LOOP_GET_STATUS64, LOOP_INFO64


def new_encode_dev(major: int, minor: int) -> int:
    """The kernel's new_encode_dev (include/linux/kdev_t.h), which fills lo_device."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


@dataclass
class FakeDevice:
    backing_file: str  # as sysfs shows it
    dev: int  # st_dev of the backing file
    ino: int
    flags: int = 0
    error: int = 0  # errno the ioctl fails with
    on_ioctl: Callable[[], None] | None = None


class FakeHost:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sys = root / "sys" / "block"
        self.dev = root / "dev"
        self.sys.mkdir(parents=True)
        self.dev.mkdir()
        self.devices: dict[str, FakeDevice] = {}
        self.opened: list[str] = []
        monkeypatch.setattr(loopdev, "SYS_BLOCK", self.sys)
        monkeypatch.setattr(loopdev, "DEV", self.dev)
        real_ioctl = fcntl.ioctl
        monkeypatch.setattr(fcntl, "ioctl", self._ioctl(real_ioctl))

    def add(self, name: str, device: FakeDevice | None) -> None:
        """A loop device node; ``None`` is an unbound one (no sysfs loop/ group)."""
        (self.sys / name).mkdir()
        (self.dev / name).write_bytes(b"")
        (self.sys / name / "ro").write_text("0\n")
        if device is not None:
            self.bind(name, device)

    def bind(self, name: str, device: FakeDevice) -> None:
        (self.sys / name / "loop").mkdir(exist_ok=True)
        (self.sys / name / "loop" / "backing_file").write_text(device.backing_file + "\n")
        dying = "1" if device.flags & LO_FLAGS_AUTOCLEAR else "0"
        (self.sys / name / "loop" / "autoclear").write_text(dying + "\n")
        self.devices[name] = device

    def unbind(self, name: str) -> None:
        for attribute in (self.sys / name / "loop").iterdir():
            attribute.unlink()
        (self.sys / name / "loop").rmdir()
        del self.devices[name]

    def _ioctl(self, real: Callable[..., object]) -> Callable[..., object]:
        def ioctl(fd: int, request: int, arg: object = 0, *rest: object) -> object:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if request != LOOP_GET_STATUS64 or name not in self.devices:
                if request == LOOP_GET_STATUS64 and (self.dev / name).exists():
                    raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))
                return real(fd, request, arg, *rest)
            self.opened.append(name)
            device = self.devices[name]
            if device.on_ioctl is not None:
                device.on_ioctl()
            if device.error:
                raise OSError(device.error, os.strerror(device.error))
            assert isinstance(arg, bytes)
            assert len(arg) == LOOP_INFO64.size == 232
            dev = new_encode_dev(os.major(device.dev), os.minor(device.dev))
            name_field = device.backing_file.encode()[:63]
            number = int(name.removeprefix("loop"))
            return LOOP_INFO64.pack(
                dev, device.ino, 0, 0, 0, number, 0, 0, device.flags, name_field, b"", b"", 0, 0
            )

        return ioctl


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    return FakeHost(tmp_path / "host", monkeypatch)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "images" / "vol-a.img"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return path


def of(path: Path, **changes: object) -> FakeDevice:
    st = path.stat()
    device = FakeDevice(backing_file=str(path), dev=st.st_dev, ino=st.st_ino)
    for key, value in changes.items():
        setattr(device, key, value)
    return device


@pytest.mark.parametrize(
    ("major", "minor"),
    [
        *[(0, 0), (7, 0), (8, 1), (254, 0), (0, 40), (0, 1048575)],
        *[(7, 255), (7, 256), (7, 300), (259, 65536), (4095, 1048575), (253, 4096)],
    ],
)
def test_lo_device_decodes_to_st_dev(major: int, minor: int) -> None:
    assert loopdev.decode_dev(new_encode_dev(major, minor)) == os.makedev(major, minor)


def test_found_by_identity_under_any_name(host: FakeHost, image: Path) -> None:
    # Attached by a driver in another container: sysfs names the file relative to its mount.
    host.add("loop3", of(image, backing_file="/images/vol-a.img"))
    assert loopdev.devices_for(image) == [str(host.dev / "loop3")]
    (device,) = loopdev.all_devices()
    assert device.backing == loopdev.FileId.of(image)
    assert device.backing_file == "/images/vol-a.img"


def test_same_name_other_file_is_not_the_image(host: FakeHost, image: Path) -> None:
    other = image.with_name("other.img")
    other.write_bytes(b"")
    host.add("loop0", of(other, backing_file=str(image)))  # a name that lies
    assert loopdev.devices_for(image) == []


def test_same_inode_other_filesystem_is_not_the_image(host: FakeHost, image: Path) -> None:
    st = image.stat()
    host.add("loop0", FakeDevice(str(image), dev=os.makedev(7, 300), ino=st.st_ino))
    assert loopdev.devices_for(image) == []


def test_deleted_and_dying_devices_are_never_matched_nor_opened(
    host: FakeHost, image: Path
) -> None:
    host.add("loop0", of(image, backing_file="/images/vol-a.img (deleted)"))
    host.add("loop1", of(image, flags=LO_FLAGS_AUTOCLEAR))
    assert loopdev.devices_for(image, read_only=None) == []
    assert host.opened == [], "opening a dying device delays its end"


def test_a_device_that_starts_dying_during_the_scan_is_not_matched(
    host: FakeHost, image: Path
) -> None:
    host.add("loop0", of(image, flags=LO_FLAGS_AUTOCLEAR))
    (host.sys / "loop0" / "loop" / "autoclear").write_text("0\n")  # sysfs read just before
    assert loopdev.devices_for(image, read_only=None) == []


def test_only_devices_named_after_the_image_are_opened(host: FakeHost, image: Path) -> None:
    snap = image.with_name("core.snap")
    snap.write_bytes(b"")
    host.add("loop0", of(snap, backing_file="/var/lib/snapd/snaps/core.snap"))
    host.add("loop1", of(snap, backing_file="/images/xvol-a.img"))  # a longer name
    host.add("loop2", of(image, backing_file="/vol-a.img"))  # a bind of images/ itself
    assert loopdev.devices_for(image) == [str(host.dev / "loop2")]
    assert host.opened == ["loop2"], "other software's devices must not be opened"


def test_read_only_filter(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image))
    host.add("loop1", of(image, flags=LO_FLAGS_READ_ONLY))
    loop0, loop1 = str(host.dev / "loop0"), str(host.dev / "loop1")
    assert loopdev.devices_for(image) == [loop0]
    assert loopdev.devices_for(image, read_only=True) == [loop1]
    assert loopdev.devices_for(image, read_only=None) == [loop0, loop1]


def test_unbound_devices_are_not_opened(host: FakeHost, image: Path) -> None:
    host.add("loop0", None)
    host.add("loop1", of(image))
    host.add("sda", None)  # not a loop device at all
    assert loopdev.devices_for(image) == [str(host.dev / "loop1")]
    assert host.opened == ["loop1"]


def test_device_detached_during_the_scan_is_skipped(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image, error=errno.ENXIO, on_ioctl=lambda: host.unbind("loop0")))
    host.add("loop1", of(image))
    assert loopdev.devices_for(image) == [str(host.dev / "loop1")]


def test_device_detached_and_bound_again_during_the_scan_is_asked_again(
    host: FakeHost, tmp_path: Path, image: Path
) -> None:
    """Unbound when asked (ENXIO), bound again to another file before sysfs is read back
    (a concurrent attach took the free device): asked again, and then it is not the image's;
    seen with four lifecycles at once on one node, as INTERNAL for an unstage."""
    other = tmp_path / "data" / "images" / "vol-b.img"
    other.write_bytes(b"")

    def rebound() -> None:
        host.unbind("loop0")
        host.bind("loop0", of(other))

    host.add("loop0", of(image, error=errno.ENXIO, on_ioctl=rebound))
    host.add("loop1", of(image))
    assert loopdev.devices_for(image) == [str(host.dev / "loop1")]
    assert host.opened == ["loop0", "loop0", "loop1"]


def test_a_device_that_never_holds_still_fails_the_lookup(host: FakeHost, image: Path) -> None:
    """One that is unbound at every look yet bound at every read back is not guessed at."""
    device = of(image, error=errno.ENXIO)
    host.add("loop0", device)
    with pytest.raises(LoopDeviceUnreadable, match="loop0"):
        loopdev.devices_for(image)


def test_device_removed_during_the_scan_is_skipped(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image))

    def remove() -> None:
        host.unbind("loop0")
        (host.sys / "loop0" / "ro").unlink()
        (host.sys / "loop0").rmdir()

    host.devices["loop0"].on_ioctl = remove
    host.devices["loop0"].error = errno.ENODEV
    assert loopdev.devices_for(image) == []
    assert loopdev.all_devices() == []


def test_bound_device_that_cannot_be_read_fails_the_lookup(host: FakeHost, image: Path) -> None:
    # Guessing "not the image's" would let a stage attach a second device to it.
    host.add("loop0", of(image, error=errno.EIO))
    with pytest.raises(LoopDeviceUnreadable, match="loop0"):
        loopdev.devices_for(image)


def test_an_injected_status_failure_fails_the_lookup_unasked(
    host: FakeHost, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.add("loop0", of(image))
    monkeypatch.setenv(kernel.FAULT_ENV, "loop:status")
    with pytest.raises(LoopDeviceUnreadable, match=r"loop:status failed on \S*loop0: .*\[EIO\]"):
        loopdev.devices_for(image)
    assert host.opened == [], "an injected failure comes before the device is asked"


def test_bound_device_without_a_node_fails_the_lookup(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image))
    (host.dev / "loop0").unlink()  # e.g. a container without the host's /dev
    with pytest.raises(LoopDeviceUnreadable, match="loop0"):
        loopdev.devices_for(image)


def test_missing_image_has_no_device_and_costs_no_scan(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image, error=errno.EIO))  # would fail the scan if it were made
    assert loopdev.devices_for(image.with_name("gone.img")) == []
    assert loopdev.LoopTable({}).devices_of(image.with_name("gone.img")) == []


def test_one_scan_serves_many_lookups(host: FakeHost, image: Path) -> None:
    second = image.with_name("vol-b.img")
    second.write_bytes(b"")
    host.add("loop0", of(image, backing_file="/images/vol-a.img"))
    host.add("loop1", of(second, backing_file="/vol-b.img"))
    table = loopdev.LoopTable.read()
    for _ in range(2):
        assert table.devices_of(image) == [str(host.dev / "loop0")]
        assert table.devices_of(second) == [str(host.dev / "loop1")]
    assert host.opened == ["loop0", "loop1"], "each device is opened once per table"


def test_all_devices_lists_every_bound_device(host: FakeHost, image: Path) -> None:
    host.add("loop0", of(image, backing_file="/images/vol-a.img (deleted)"))
    host.add("loop1", of(image, flags=LO_FLAGS_AUTOCLEAR))
    host.add("loop2", None)
    listed = {d.path: d for d in loopdev.all_devices()}
    assert sorted(listed) == [str(host.dev / "loop0"), str(host.dev / "loop1")]
    assert all(d.backing == loopdev.FileId.of(image) for d in listed.values())
    assert not any(d.usable for d in listed.values())


def test_the_file_names_a_table_shows_are_the_last_part_of_each_backing_file() -> None:
    """What a start narrows its search to: a deleted file shows under a name no image has."""
    table = loopdev.LoopTable({"loop0": "/data/images/vol-a.img", "loop1": "/x/b.img (deleted)"})
    assert table.file_names() == {"vol-a.img", "b.img (deleted)"}
