"""csi.host.mount.parse_mountinfo on sample /proc/self/mountinfo text."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.host import mount
from csi.host.mount import mounts_at, mounts_under, parse_mountinfo

SAMPLE = "\n".join(
    [
        "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro",
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue",
        "40 22 0:35 / /var/lib/kubelet/pods/my\\040pod/vol ro,nosuid - tmpfs tmpfs rw,size=1024k",
        "41 22 7:3 /sub\\011dir /mnt/tab\\134slash rw - xfs /dev/loop3 rw,attr2",
        "42 22 7:4 / /mnt/no-optional rw - ext4 /dev/my\\040disk rw",
        "",
        "garbage line",
        "43 22 0:5 / /dev/loop-stage rw,nosuid shared:9 master:3 propagate_from:2 unbindable"
        " - devtmpfs udev rw,size=100k,mode=755",
    ]
)


def test_parses_every_valid_line() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_id for e in entries] == [22, 36, 40, 41, 42, 43]


def test_fields_and_optional_fields() -> None:
    entry = parse_mountinfo(SAMPLE)[1]
    assert entry.mount_id == 36
    assert entry.parent_id == 35
    assert entry.device == "98:0"
    assert entry.root == "/mnt1"
    assert entry.mount_point == "/mnt2"
    assert entry.options == ("rw", "noatime")
    assert entry.fs_type == "ext3"
    assert entry.source == "/dev/root"
    assert entry.super_options == ("rw", "errors=continue")
    assert not entry.read_only


def test_many_optional_fields() -> None:
    entry = parse_mountinfo(SAMPLE)[-1]
    assert entry.mount_point == "/dev/loop-stage"
    assert entry.fs_type == "devtmpfs"
    assert entry.source == "udev"
    assert entry.options == ("rw", "nosuid")


def test_octal_escapes() -> None:
    entries = {e.mount_id: e for e in parse_mountinfo(SAMPLE)}
    assert entries[40].mount_point == "/var/lib/kubelet/pods/my pod/vol"
    assert entries[40].read_only
    assert entries[41].root == "/sub\tdir"
    assert entries[41].mount_point == "/mnt/tab\\slash"
    assert entries[42].source == "/dev/my disk"


def test_newline_escape() -> None:
    line = "50 22 0:40 / /mnt/a\\012b rw - tmpfs tmpfs rw"
    assert parse_mountinfo(line)[0].mount_point == "/mnt/a\nb"


@pytest.mark.parametrize("char", ["\u2028", "\x85", "\x1d", "\x0b", "\x0c", "\r"])
def test_only_a_newline_ends_a_line(char: str) -> None:
    """Found by the fuzz tier: a target named with a character str.splitlines() breaks at
    was misread, so the driver never found (nor unmounted) its mount."""
    line = f"50 22 0:40 / /mnt/a{char}b rw - tmpfs tmpfs rw\n51 22 0:41 / /mnt/c rw - tmpfs t rw"
    entries = parse_mountinfo(line)
    assert [e.mount_point for e in entries] == [f"/mnt/a{char}b", "/mnt/c"]


def test_mounts_at_and_under() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_id for e in mounts_at("/mnt2/", entries)] == [36]
    assert [e.mount_id for e in mounts_at("/var/lib/kubelet/pods/my pod/vol", entries)] == [40]
    assert mounts_at("/var/lib/kubelet/pods/my", entries) == []
    under = mounts_under("/var/lib/kubelet/pods", entries)
    assert [e.mount_id for e in under] == [40]
    assert mounts_under("/mnt/no", entries) == []  # a prefix, not a parent


def test_unescaped_separators_inside_a_path() -> None:
    # Found by the fuzz tier: a target path with \x1e left a mount the driver could not see
    # (str.splitlines() splits there; the kernel does not escape it).
    odd = "/pods/a\x1eb\x1cc\x85d\u2028e"
    text = f"50 22 7:0 / {odd} rw - ext4 /dev/loop0 rw\n51 22 0:40 / /mnt/x rw - tmpfs t rw\n"
    assert [e.mount_point for e in parse_mountinfo(text)] == [odd, "/mnt/x"]


# Paths a question about one place could be confused with: a prefix, a longer name, the
# same text as a mount's root rather than its mount point, escaped characters.
ASKED = [
    "/",
    "/mnt2",
    "/mnt1",
    "/mnt",
    "/mnt/tab\\slash",
    "/mnt/tab",
    "/var/lib/kubelet/pods/my pod/vol",
    "/var/lib/kubelet/pods/my pod",
    "/var/lib/kubelet/pods/my",
    "/var/lib/kubelet",
    "/dev/loop-stage",
    "/dev/loop",
    "/mnt/a\nb",
    "/nowhere",
]


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    text = SAMPLE + "\n50 22 0:40 / /mnt/a\\012b rw - tmpfs tmpfs rw\n"
    (tmp_path / "mountinfo").write_text(text)
    monkeypatch.setattr(mount, "MOUNTINFO", tmp_path / "mountinfo")
    return text


@pytest.mark.parametrize("path", ASKED)
def test_reading_the_table_for_one_place_finds_what_the_whole_table_holds(
    table: str, path: str
) -> None:
    whole = parse_mountinfo(table)
    assert mounts_at(path) == mounts_at(path, whole)
    assert mounts_under(path) == mounts_under(path, whole)
    assert mount.is_mount_point(path) == bool(mounts_at(path, whole))


def test_a_question_about_one_place_parses_only_the_lines_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's table holds every pod's mounts; asking whether a target is mounted reads
    the lines naming it, whatever the size of the table (counted, not timed)."""
    made: list[str] = []

    class Counted(mount.MountEntry):
        def __new__(cls, *args: object, **fields: object) -> Counted:
            made.append(str(fields["mount_point"]))
            return super().__new__(cls, *args, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(mount, "MountEntry", Counted)
    for pods in (10, 1_000):
        lines = [
            f"{100 + i} 22 0:{i} / /var/lib/kubelet/pods/p{i}/vol rw - tmpfs t rw"
            for i in range(pods)
        ]
        (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
        monkeypatch.setattr(mount, "MOUNTINFO", tmp_path / "mountinfo")
        made.clear()
        assert mount.is_mount_point("/var/lib/kubelet/pods/p7/vol")
        assert made == ["/var/lib/kubelet/pods/p7/vol"]
