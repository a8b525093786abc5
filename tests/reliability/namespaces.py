"""Drivers in mount namespaces of their own, the way DaemonSet pods run them.

Each driver reaches the data dir through a bind mount made in its own namespace (a
container's hostPath), so the kernel names the loop devices it attaches relative to that
mount, and once the driver is gone the name reads ``/images/<id>.img``. The kubelet's
directory is a shared mount, as the DaemonSet's Bidirectional mounts make it: staging
mounts and publish targets a driver makes there reach the host and outlive the driver.
A driver with ``kubelet_shared=False`` keeps everything it mounts in its own namespace,
and its mounts end with it (its loop devices do not).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.driver import DriverProcess, driver_argv
from tests.support.host import file_id, loops_backed_by, mounts_at, mounts_under, sh
from tests.support.prerequisites import need_tool

# Run by sh in the new namespace: bind the data dir onto the driver's view of it, then
# become the driver (exec keeps the PID, so SIGTERM reaches the driver itself).
_ENTER = 'mount --bind -- "$1" "$2" && shift 2 && exec "$@"'


class NamespacedDriver(DriverProcess):
    """A driver process in a new mount namespace that sees the data dir at ``view``."""

    def __init__(self, node: Node, name: str, *, kubelet_shared: bool) -> None:
        super().__init__(
            node.data_dir, node.root / "logs" / name, node.kubelet_root, node_id=node.node_id
        )
        self.view = node.shared_view or node.views / name
        self.view.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)  # what the hostPath names
        self.kubelet_shared = kubelet_shared

    def command(self, args: Sequence[str]) -> list[str]:
        # "unchanged" keeps the kubelet dir in the host's peer group; "private" cuts it off.
        propagation = "unchanged" if self.kubelet_shared else "private"
        return in_view(self.data_dir, self.view, driver_argv(self.view, args), propagation)


def in_view(
    data_dir: Path, view: Path, argv: Sequence[str], propagation: str = "unchanged"
) -> list[str]:
    """``argv`` run in a new mount namespace that sees ``data_dir`` at ``view``."""
    enter = ["unshare", "--mount", "--propagation", propagation, "--", "sh", "-c", _ENTER]
    return [*enter, "sh", str(data_dir), str(view), *argv]


class Node:
    """One node's directories: the data dir, the kubelet's (shared) and the drivers' views
    (private, so no driver's bind of the data dir ever reaches the host). With
    ``shared_view``, every driver of the node sees its data dir at that one path, which
    other nodes' drivers use too (kind: /var/lib/localvol-csi in every node)."""

    def __init__(self, root: Path, node_id: str = "n1", shared_view: Path | None = None) -> None:
        self.root = root
        self.node_id = node_id
        self.shared_view = shared_view
        self.data_dir = root / "data"
        self.kubelet_root = root / "kubelet"
        self.views = root / "views"
        self.drivers: list[NamespacedDriver] = []
        self.identities: set[tuple[tuple[int, int], str]] = set()  # (identity, file name)

    def driver(self, name: str, *, kubelet_shared: bool = True) -> NamespacedDriver:
        driver = NamespacedDriver(self, name, kubelet_shared=kubelet_shared)
        self.drivers.append(driver)
        return driver

    def remember(self, image: Path) -> tuple[int, int]:
        """The image's identity, kept so teardown finds its devices under any name."""
        identity = file_id(image)
        self.identities.add((identity, image.name))
        return identity

    def leftover_devices(self) -> list[str]:
        images = self.data_dir / "images"
        current = {(file_id(p), p.name) for p in images.iterdir()} if images.is_dir() else set()
        known = self.identities | current
        return sorted({d for identity, name in known for d in loops_backed_by(identity, name)})


def _bind_onto_itself(path: Path, propagation: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for argv in (["--bind", str(path), str(path)], ["--make-private", str(path)]):
        done = sh("mount", *argv)
        assert done.returncode == 0, done.stderr
    if propagation == "shared":
        done = sh("mount", "--make-shared", str(path))
        assert done.returncode == 0, done.stderr


@contextmanager
def node(root: Path, node_id: str = "n1", shared_view: Path | None = None) -> Iterator[Node]:
    """A node for drivers in namespaces; afterwards every driver is stopped, every mount
    under it undone and every loop device of its images detached (a leak fails)."""
    for tool in ("unshare", "nsenter", "losetup"):
        need_tool(tool)
    result = Node(root, node_id, shared_view)
    _bind_onto_itself(result.kubelet_root, "shared")
    _bind_onto_itself(result.views, "private")
    try:
        yield result
    finally:
        leaked = _tear_down(result)
    assert not leaked, f"test left behind: {leaked}"


def _tear_down(node: Node) -> list[str]:
    """Stop the drivers, undo every mount and detach every device; returns the leftovers."""
    for driver in node.drivers:
        driver.kill()
    mounts = mounts_under(node.kubelet_root)
    for point in sorted(mounts, key=len, reverse=True):
        sh("umount", "--", point)
    devices = node.leftover_devices()
    for device in devices:
        sh("losetup", "--detach", device)
    for path in (node.kubelet_root, node.views):
        for _ in range(5):  # each bind onto itself, once (more if a test stacked another)
            if mounts_at(path):
                sh("umount", "--", str(path))
    return [*mounts, *devices]


@contextmanager
def kind_nodes(root: Path, count: int) -> Iterator[list[Node]]:
    """``count`` nodes on this one kernel, the way kind runs them: each node's driver sees
    its own node's data dir at the same path, and every node sees every loop device. The
    path is under a directory private on the host, so no node's bind of it reaches it."""
    views = root / "view"
    _bind_onto_itself(views, "private")
    try:
        with ExitStack() as stack:
            yield [
                stack.enter_context(node(root / f"node-{i}", f"node-{i}", views / "data"))
                for i in range(1, count + 1)
            ]
    finally:
        for _ in range(5):
            if mounts_at(views):
                sh("umount", "--", str(views))
