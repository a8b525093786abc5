"""csi.layout: the one way an untrusted ID becomes a path under the data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.errors import InvalidArgument
from csi.layout import ID_PATTERN, Layout, check_id, is_valid_id, volume_id_for_name


@pytest.mark.parametrize("name", ["pvc-1", "a", "x" * 128, "名前-ü", "with space"])
def test_volume_id_for_name_is_stable_and_follows_the_grammar(name: str) -> None:
    first = volume_id_for_name(name)
    assert first == volume_id_for_name(name)
    assert ID_PATTERN.fullmatch(first)
    assert check_id(first) == first


def test_volume_ids_differ_for_different_names() -> None:
    names = [f"pvc-{i}" for i in range(200)]
    assert len({volume_id_for_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("value", ["a", "0", "vol-0123", "a" * 64, "a" * 128, "a-b-c"])
def test_check_id_accepts_grammar(value: str) -> None:
    assert check_id(value) == value
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "../x",
        "/abs",
        "A",
        "x" * 129,  # the grammar allows 128 (kubelet inline volume IDs)
        "a\x00b",
        "vol-é",
        "vol-\u0661",  # ARABIC-INDIC DIGIT ONE
        "-leading-dash",
        "a/b",
        "a.b",
        "a\n",
        ".",
        "..",
    ],
)
def test_check_id_rejects(value: str) -> None:
    with pytest.raises(InvalidArgument):
        check_id(value)
    assert not is_valid_id(value)


def test_check_id_message_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="snapshot_id"):
        check_id("", "snapshot_id")


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd", "A"])
def test_layout_paths_refuse_bad_ids(tmp_path: Path, bad: str) -> None:
    layout = Layout(tmp_path)
    for to_path in (layout.directory_path, layout.image_path, layout.record_path):
        with pytest.raises(InvalidArgument):
            to_path(bad)


def test_layout_paths_stay_under_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    volume_id = volume_id_for_name("pvc")
    assert layout.directory_path(volume_id) == tmp_path / "volumes" / volume_id
    assert layout.image_path(volume_id) == tmp_path / "images" / f"{volume_id}.img"
    assert layout.record_path(volume_id) == tmp_path / "state" / "volumes" / f"{volume_id}.json"


def test_ensure_creates_directories(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    layout.ensure()  # idempotent
    for directory in (layout.volumes_dir, layout.images_dir, layout.state_dir):
        assert directory.is_dir()


def test_contains(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "data2").mkdir()
    (tmp_path / "outside").mkdir()
    layout = Layout(root)
    assert layout.contains(root)
    assert layout.contains(root / "volumes" / "x")
    assert layout.contains(tmp_path / "outside" / ".." / "data" / "y")
    assert not layout.contains(tmp_path / "data2")  # a sibling sharing the prefix
    assert not layout.contains(tmp_path)
    assert not layout.contains(tmp_path / "data" / ".." / "outside")


def test_contains_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    link = tmp_path / "sneaky"
    link.symlink_to(root)
    outside_link = root / "escape"
    outside_link.symlink_to(tmp_path)
    layout = Layout(root)
    assert layout.contains(link / "volumes")
    assert not layout.contains(outside_link)
