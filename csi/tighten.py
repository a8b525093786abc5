"""A data root an older driver kept, brought to today's modes (csi.host.modes) at start-up.

The directories on the way are narrowed by ``Layout.ensure`` before anything is served; this
narrows what they hold: records (every file under state/), images and snapshot images to
0600, the Docker plugin's per-volume directories to 0700. What a volume holds is never
changed, nor its root: a running pod may depend on its modes (a non-root pod without an
fsGroup reaches an older volume through its "other" bits), and a root's mode may be the
user's own choice, which the driver cannot tell from an older default. Mount points
(ephemeral/, setup/, docker/<id>/stage|mount) are left too: a chmod there would change the
mounted volume's root.
"""

from __future__ import annotations

import os
from pathlib import Path

from csi.host import files, modes
from csi.layout import Layout


def tighten(layout: Layout) -> list[Path]:
    """Narrow what is too open; returns the paths changed. One lstat per file and no more:
    a node may hold many thousands of records, and this runs before the driver is ready."""
    changed: list[Path] = []

    def narrow(path: str, allowed: int) -> None:
        if files.restrict(path, allowed):
            changed.append(Path(path))

    state = layout.root / "state"
    for dirpath, dirnames, filenames in os.walk(state):
        for name in dirnames:
            narrow(os.path.join(dirpath, name), modes.PRIVATE_DIR)
        for name in filenames:
            narrow(os.path.join(dirpath, name), modes.PRIVATE_FILE)
    for directory in (layout.images_dir, layout.snapshots_dir):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False):  # a snapshot's .dir tree is content
                narrow(entry.path, modes.PRIVATE_FILE)
    for entry in os.scandir(layout.plugin_dir):
        if entry.is_dir(follow_symlinks=False):
            narrow(entry.path, modes.PRIVATE_DIR)
    return changed
