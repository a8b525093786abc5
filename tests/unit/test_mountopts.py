"""csi.host.mountopts: mount options split the way mount(8) splits them."""

from __future__ import annotations

import os

import pytest

from csi.host.errors import InvalidMountOption
from csi.host.mountopts import (
    FLAG_OPTIONS,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    MountOptions,
    flags_from_statvfs,
    for_bind,
    for_filesystem,
    parse_options,
    remount_flags,
)


@pytest.mark.parametrize(
    ("option", "bit"),
    [
        ("ro", MS_RDONLY),
        ("nosuid", MS_NOSUID),
        ("nodev", MS_NODEV),
        ("noexec", MS_NOEXEC),
        ("sync", MS_SYNCHRONOUS),
        ("dirsync", MS_DIRSYNC),
        ("mand", MS_MANDLOCK),
        ("noatime", MS_NOATIME),
        ("nodiratime", MS_NODIRATIME),
        ("relatime", MS_RELATIME),
        ("strictatime", MS_STRICTATIME),
        ("lazytime", MS_LAZYTIME),
        ("remount", MS_REMOUNT),
        ("bind", MS_BIND),
        ("rbind", MS_BIND | MS_REC),
    ],
)
def test_flag_options_set_their_bit(option: str, bit: int) -> None:
    parsed = parse_options([option])
    assert parsed == MountOptions(set_flags=bit)


@pytest.mark.parametrize(
    ("option", "bit"),
    [
        ("rw", MS_RDONLY),
        ("suid", MS_NOSUID),
        ("dev", MS_NODEV),
        ("exec", MS_NOEXEC),
        ("async", MS_SYNCHRONOUS),
        ("nomand", MS_MANDLOCK),
        ("atime", MS_NOATIME),
        ("diratime", MS_NODIRATIME),
        ("norelatime", MS_RELATIME),
        ("nostrictatime", MS_STRICTATIME),
        ("nolazytime", MS_LAZYTIME),
    ],
)
def test_negations_clear_their_bit(option: str, bit: int) -> None:
    assert parse_options([option]) == MountOptions(cleared=bit)


def test_the_last_word_on_a_bit_wins() -> None:
    assert parse_options(["ro", "rw"]) == MountOptions(cleared=MS_RDONLY)
    assert parse_options(["rw", "ro"]) == MountOptions(set_flags=MS_RDONLY)
    both = parse_options(["noexec", "nosuid", "exec"])
    assert (both.set_flags, both.cleared) == (MS_NOSUID, MS_NOEXEC)
    assert both.apply(MS_NOEXEC | MS_NODEV) == MS_NOSUID | MS_NODEV


def test_everything_else_is_filesystem_data_in_order() -> None:
    parsed = parse_options(["errors=remount-ro", "noatime", "nouuid", 'context="a:b:c,d"'])
    assert parsed.set_flags == MS_NOATIME
    assert parsed.data == ("errors=remount-ro", "nouuid", 'context="a:b:c,d"')
    assert parsed.data_string == 'errors=remount-ro,nouuid,context="a:b:c,d"'
    assert parse_options(["ro"]).data_string is None


def test_a_flag_name_with_a_value_is_data() -> None:
    # mount(8) matches flag names exactly; "ro=1" is for the filesystem to judge.
    assert parse_options(["ro=1"]) == MountOptions(data=("ro=1",))


@pytest.mark.parametrize(
    ("option", "change"),
    [
        ("shared", MS_SHARED),
        ("private", MS_PRIVATE),
        ("slave", MS_SLAVE),
        ("unbindable", MS_UNBINDABLE),
        ("rshared", MS_SHARED | MS_REC),
        ("rprivate", MS_PRIVATE | MS_REC),
        ("rslave", MS_SLAVE | MS_REC),
        ("runbindable", MS_UNBINDABLE | MS_REC),
    ],
)
def test_propagation_is_a_call_of_its_own(option: str, change: int) -> None:
    parsed = parse_options(["nosuid", option])
    assert parsed.propagation == (change,)
    assert parsed.set_flags == MS_NOSUID


@pytest.mark.parametrize(
    "option",
    [
        *("defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser"),
        *("owner", "group", "comment=fstab", "x-systemd.automount", "X-mount.mkdir"),
    ],
)
def test_userspace_options_reach_no_call(option: str) -> None:
    assert parse_options([option, "noexec"]) == MountOptions(set_flags=MS_NOEXEC)


@pytest.mark.parametrize(
    "option", ["loop", "loop=/dev/loop9", "offset=4096", "sizelimit=1", "move", "helper=x"]
)
def test_options_asking_mount8_for_work_are_refused(option: str) -> None:
    with pytest.raises(InvalidMountOption, match="option 2 of 2"):
        parse_options(["noatime", option])


@pytest.mark.parametrize("option", ["", "a\x00b"])
def test_empty_or_nul_options_are_refused(option: str) -> None:
    with pytest.raises(InvalidMountOption):
        parse_options([option])


def test_refusals_never_quote_the_option() -> None:
    secret = "loop=hunter2-secret"
    with pytest.raises(InvalidMountOption) as caught:
        parse_options([secret])
    assert "hunter2" not in caught.value.message
    with pytest.raises(InvalidMountOption) as caught:
        for_bind(["password=hunter2"], refuse_data=True)
    assert "hunter2" not in caught.value.message


# -- what each kind of mount accepts -----------------------------------------------------------
def test_a_bind_takes_per_mount_flags_and_propagation() -> None:
    parsed = for_bind(["bind", "nosuid", "nodev", "private"])
    assert parsed == MountOptions(set_flags=MS_NOSUID | MS_NODEV, propagation=(MS_PRIVATE,))


def test_a_bind_ignores_filesystem_data_unless_told_to_refuse_it() -> None:
    # mount(8) hands them to the bind remount, where the kernel ignores them.
    assert for_bind(["discard", "noexec"]).set_flags == MS_NOEXEC
    with pytest.raises(InvalidMountOption, match=r"option 2 of 3.*not a mount flag"):
        for_bind(["noexec", "discard", "nodev"], refuse_data=True)


@pytest.mark.parametrize("option", ["remount", "rbind"])
def test_a_bind_refuses_to_change_the_kind_of_call(option: str) -> None:
    with pytest.raises(InvalidMountOption, match="option 1 of 1"):
        for_bind([option])


@pytest.mark.parametrize("option", ["remount", "bind", "rbind"])
def test_a_filesystem_mount_refuses_to_change_the_kind_of_call(option: str) -> None:
    with pytest.raises(InvalidMountOption, match="option 2 of 2"):
        for_filesystem(["ro", option])


def test_a_filesystem_mount_passes_data_on() -> None:
    parsed = for_filesystem(["ro", "nouuid", "noatime"])
    assert (parsed.set_flags, parsed.data) == (MS_RDONLY | MS_NOATIME, ("nouuid",))


# -- bind remounts -----------------------------------------------------------------------------
def test_statvfs_flags_are_read_as_mount_flags() -> None:
    f_flag = os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_RELATIME
    assert flags_from_statvfs(f_flag) == MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | (
        MS_RELATIME
    )
    assert flags_from_statvfs(os.ST_NOATIME | os.ST_NODIRATIME) == MS_NOATIME | MS_NODIRATIME
    assert flags_from_statvfs(0) == 0


def test_a_read_only_remount_keeps_the_flags_the_mount_has() -> None:
    current = MS_NOSUID | MS_NODEV | MS_RELATIME
    wanted = remount_flags(current, MountOptions(set_flags=MS_RDONLY))
    assert wanted == MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_RELATIME


def test_a_remount_clears_what_the_options_clear() -> None:
    wanted = remount_flags(MS_NOEXEC | MS_RDONLY, MountOptions(cleared=MS_NOEXEC | MS_RDONLY))
    assert wanted == MS_REMOUNT | MS_BIND


def test_a_remount_keeps_only_per_mount_flags() -> None:
    # Superblock flags (sync, lazytime...) are not the bind's to change.
    wanted = remount_flags(MS_SYNCHRONOUS | MS_LAZYTIME, MountOptions(set_flags=MS_RDONLY))
    assert wanted == MS_REMOUNT | MS_BIND | MS_RDONLY


@pytest.mark.parametrize("mode", [MS_NOATIME, MS_RELATIME, MS_STRICTATIME])
def test_an_atime_mode_asked_for_replaces_the_mounts(mode: int) -> None:
    current = MS_NOATIME | MS_NODIRATIME
    wanted = remount_flags(current, MountOptions(set_flags=mode))
    assert wanted == MS_REMOUNT | MS_BIND | mode | MS_NODIRATIME


def test_every_flag_option_is_one_bit_or_rbind() -> None:
    for name, (bit, _) in FLAG_OPTIONS.items():
        assert bit.bit_count() == 1 or name == "rbind", name
