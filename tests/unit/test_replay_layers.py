"""The Dockerfile replay's layer keys: a step's key covers the base, every step up to it and
the content COPY takes, and nothing after it (tests.manifests.replay_layers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests import replay_layers

STEPS = [
    ("RUN", "apt-get install -y python3"),
    ("COPY", "requirements.txt /src/"),
    ("RUN", "pip install -r requirements.txt"),
    ("COPY", "csi /src/csi"),
    ("RUN", "pip install /src"),
]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "csi" / "__pycache__").mkdir(parents=True)
    (tmp_path / "csi" / "driver.py").write_text("one\n")
    (tmp_path / "csi" / "__pycache__" / "driver.pyc").write_bytes(b"\0")
    (tmp_path / "requirements.txt").write_text("grpcio==1\n")
    monkeypatch.setattr(replay_layers, "ROOT", tmp_path)
    return tmp_path


def test_a_change_of_copied_code_changes_its_step_and_the_later_ones_only(tree: Path) -> None:
    before = replay_layers.step_keys("base", STEPS)
    (tree / "csi" / "driver.py").write_text("two\n")
    after = replay_layers.step_keys("base", STEPS)
    assert after[:3] == before[:3]
    assert after[3] != before[3]
    assert after[4] != before[4]


def test_what_dockerignore_leaves_out_changes_nothing(tree: Path) -> None:
    before = replay_layers.step_keys("base", STEPS)
    (tree / "csi" / "__pycache__" / "driver.pyc").write_bytes(b"\1")
    assert replay_layers.step_keys("base", STEPS) == before


def test_another_base_or_step_text_changes_every_key_from_there(tree: Path) -> None:
    keys = replay_layers.step_keys("base", STEPS)
    assert set(keys).isdisjoint(replay_layers.step_keys("another base", STEPS))
    edited = [*STEPS[:2], ("RUN", "pip install --no-deps -r requirements.txt"), *STEPS[3:]]
    changed = replay_layers.step_keys("base", edited)
    assert changed[:2] == keys[:2]
    assert set(changed[2:]).isdisjoint(keys[2:])
