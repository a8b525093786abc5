"""Command line: ``localvol-csi`` / ``python -m csi`` serves the driver;
``localvol-csi inspect`` reports what the data dir holds (csi.inspect), read-only."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from csi import __version__, logs, units
from csi.config import DEFAULT_DRIVER_NAME, GIB, TIB, Config, HostPort, QuotaMode
from csi.endpoints import grpc_address

DEFAULT_DATA_DIR = "/var/lib/localvol-csi"
# The CSI spec's grammar for a plugin name; it also names the registration socket.
DRIVER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?")


def parse_size(text: str) -> int:
    try:
        return units.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_host_port(text: str) -> HostPort:
    """``:9808``, ``host:9808`` or ``[::1]:9808``; an empty host is every interface."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected [host]:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"an IPv6 host needs brackets: {text!r}")
    return HostPort(host, int(port))


def env_flag(name: str, default: bool) -> bool:
    """A switch from the environment: 1, true or yes (any case) turn it on."""
    value = os.environ.get(name)
    return default if value is None else value.lower() in ("1", "true", "yes")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="localvol-csi",
        description="CSI driver (Identity, Controller, Node) for node-local directory and "
        "loop-device volumes. Every option can also be set through the environment "
        "variable shown.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--data-dir",
        default=env("CSI_DATA_DIR", DEFAULT_DATA_DIR),
        help="directory holding volumes, images and state [CSI_DATA_DIR] (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint",
        default=env("CSI_ENDPOINT"),
        help="unix:///path/to.sock or tcp://host:port [CSI_ENDPOINT] "
        "(default: unix://<data-dir>/csi.sock)",
    )
    parser.add_argument(
        "--node-id",
        default=env("CSI_NODE_ID") or socket.gethostname(),
        help="this node's ID, also its topology value [CSI_NODE_ID] (default: host name)",
    )
    parser.add_argument(
        "--driver-name",
        default=env("CSI_DRIVER_NAME", DEFAULT_DRIVER_NAME),
        help="CSI driver name [CSI_DRIVER_NAME] (default: %(default)s)",
    )
    parser.add_argument(
        "--max-volumes-per-node",
        type=int,
        default=int(env("CSI_MAX_VOLUMES_PER_NODE", "0")),
        help="volumes this node accepts; 0 for no limit [CSI_MAX_VOLUMES_PER_NODE]",
    )
    parser.add_argument(
        "--default-volume-size",
        type=parse_size,
        default=parse_size(env("CSI_DEFAULT_VOLUME_SIZE", "1Gi")),
        help="size when a request names none [CSI_DEFAULT_VOLUME_SIZE] (default: 1Gi)",
    )
    parser.add_argument(
        "--max-volume-size",
        type=parse_size,
        default=parse_size(env("CSI_MAX_VOLUME_SIZE", "16Ti")),
        help="largest volume accepted [CSI_MAX_VOLUME_SIZE] (default: 16Ti)",
    )
    parser.add_argument(
        "--capacity-limit",
        type=parse_size,
        default=parse_size(env("CSI_CAPACITY_LIMIT", "0")),
        help="cap on the total size of all volumes, 0 for the data dir's free space "
        "[CSI_CAPACITY_LIMIT]",
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=env("CSI_LOG_LEVEL", "info"),
        help="[CSI_LOG_LEVEL] (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=env("CSI_LOG_FORMAT", "text"),
        help="key=value text or JSON lines [CSI_LOG_FORMAT] (default: %(default)s)",
    )
    parser.add_argument(
        "--controller-expansion",
        action=argparse.BooleanOptionalAction,
        default=env_flag("CSI_CONTROLLER_EXPANSION", True),
        help="offer ControllerExpandVolume; turn off in a per-node deployment, where "
        "NodeExpandVolume grows volumes instead [CSI_CONTROLLER_EXPANSION] (default: on)",
    )
    parser.add_argument(
        "--overcommit",
        action=argparse.BooleanOptionalAction,
        default=env_flag("CSI_OVERCOMMIT", False),
        help="let volumes together be promised more than the free space (thin "
        "provisioning of loop images and of directories held by quotas; a full disk then "
        "fails writes inside volumes) [CSI_OVERCOMMIT] "
        "(default: off)",
    )
    parser.add_argument(
        "--directory-quota",
        type=QuotaMode,
        choices=list(QuotaMode),
        default=os.environ.get("CSI_DIRECTORY_QUOTA", QuotaMode.ENFORCE.value),
        help="hold directory volumes to their size with the data root's project quotas: "
        "'enforce' where its filesystem has them on (else unenforced, said at start), "
        "'require' (refuse directory volumes where it cannot), 'off' "
        "[CSI_DIRECTORY_QUOTA] (default: enforce)",
    )
    parser.add_argument(
        "--volume-condition",
        action=argparse.BooleanOptionalAction,
        default=env_flag("CSI_VOLUME_CONDITION", True),
        help="also report the CSI 1.12 volume condition (VOLUME_CONDITION), which "
        "Kubernetes 1.34-1.36 read, beside the CSI 1.13 health RPCs "
        "[CSI_VOLUME_CONDITION] (default: on)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env("CSI_WORKERS", "16")),
        help="concurrent RPCs served [CSI_WORKERS] (default: %(default)s)",
    )
    parser.add_argument(
        "--plugin-registration-dir",
        default=env("CSI_PLUGIN_REGISTRATION_DIR") or None,
        help="register with the kubelet: serve its plugin-registration API on "
        "<dir>/<driver-name>-reg.sock, e.g. /var/lib/kubelet/plugins_registry "
        "[CSI_PLUGIN_REGISTRATION_DIR] (default: off)",
    )
    parser.add_argument(
        "--kubelet-registration-path",
        default=env("CSI_KUBELET_REGISTRATION_PATH") or None,
        help="the CSI socket's path as the kubelet on the host sees it "
        "[CSI_KUBELET_REGISTRATION_PATH] (default: the --endpoint socket's path)",
    )
    parser.add_argument(
        "--health-address",
        type=parse_host_port,
        default=env("CSI_HEALTH_ADDRESS") or None,
        help="serve HTTP /healthz on [host]:port, e.g. :9808: 200 once ready (and, with "
        "registration on, registered) [CSI_HEALTH_ADDRESS] (default: off)",
    )
    parser.add_argument(
        "--docker-plugin-socket",
        default=env("CSI_DOCKER_PLUGIN_SOCKET") or None,
        help="serve Docker and Podman volumes (the volume-plugin protocol) on this unix "
        "socket, e.g. /run/docker/plugins/localvol.sock [CSI_DOCKER_PLUGIN_SOCKET] "
        "(default: off)",
    )
    parser.add_argument(
        "--assign-snapshot-contents",
        action=argparse.BooleanOptionalAction,
        default=env_flag("CSI_ASSIGN_SNAPSHOT_CONTENTS", False),
        help="in a pod: label imported VolumeSnapshotContents whose snapshot this node "
        "holds with snapshot.storage.kubernetes.io/managed-by=<node-id>, so the "
        "node-deployed csi-snapshotter takes them, and name the node that holds a clone's "
        "or restore's source when it is another, pointing the claim there (needs list, "
        "watch and patch of volumesnapshotcontents, list of persistentvolumes, patch of "
        "persistentvolumeclaims) "
        "[CSI_ASSIGN_SNAPSHOT_CONTENTS] (default: off)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(env("CSI_SHUTDOWN_GRACE", "30")),
        help="seconds in-flight calls get to finish on SIGTERM (default: %(default)s)",
    )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    parser = build_parser()
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).absolute()
    if args.max_volumes_per_node < 0:
        parser.error("--max-volumes-per-node must not be negative")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.node_id or len(args.node_id.encode()) > 192:
        parser.error("--node-id must be 1 to 192 bytes")
    if args.max_volume_size <= 0:
        args.max_volume_size = 16 * TIB
    endpoint = args.endpoint or f"unix://{data_dir / 'csi.sock'}"
    registration_dir, kubelet_path = _registration(parser, args, endpoint)
    docker_socket = args.docker_plugin_socket
    if docker_socket is not None and not Path(docker_socket).is_absolute():
        parser.error("--docker-plugin-socket must be an absolute path")
    return Config(
        driver_name=args.driver_name,
        node_id=args.node_id,
        data_dir=data_dir,
        endpoint=endpoint,
        max_volumes_per_node=args.max_volumes_per_node,
        default_volume_size=args.default_volume_size or GIB,
        max_volume_size=args.max_volume_size,
        capacity_limit=args.capacity_limit,
        log_level=args.log_level,
        log_format=args.log_format,
        workers=args.workers,
        controller_expansion=args.controller_expansion,
        overcommit=args.overcommit,
        directory_quota=args.directory_quota,
        shutdown_grace=args.shutdown_grace,
        plugin_registration_dir=registration_dir,
        kubelet_registration_path=kubelet_path,
        health_address=args.health_address,
        legacy_volume_condition=args.volume_condition,
        docker_plugin_socket=Path(docker_socket) if docker_socket is not None else None,
        assign_snapshot_contents=args.assign_snapshot_contents,
    )


def _registration(
    parser: argparse.ArgumentParser, args: argparse.Namespace, endpoint: str
) -> tuple[Path | None, Path | None]:
    """The registration directory and the kubelet's path of the CSI socket, both or neither."""
    if args.plugin_registration_dir is None:
        if args.kubelet_registration_path is not None:
            parser.error("--kubelet-registration-path needs --plugin-registration-dir")
        return None, None
    if not DRIVER_NAME.fullmatch(args.driver_name):
        parser.error("--driver-name must be 1-63 letters, digits, '.' or '-' to register")
    kubelet_path = args.kubelet_registration_path
    if kubelet_path is None:
        try:
            _, socket_path = grpc_address(endpoint)
        except ValueError as exc:
            parser.error(str(exc))
        if socket_path is None:
            parser.error("a tcp:// endpoint needs --kubelet-registration-path")
        kubelet_path = str(socket_path)
    if not Path(kubelet_path).is_absolute():
        parser.error("--kubelet-registration-path must be an absolute path")
    return Path(args.plugin_registration_dir).absolute(), Path(kubelet_path)


INSPECT = "inspect"


def inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"localvol-csi {INSPECT}",
        description="Print what the driver holds on this node: each volume and snapshot "
        "(kind, size, phase, staging path and targets, loop devices, health), every record "
        "the driver refuses and why, and data no record accounts for. Reads the data dir "
        "only; safe beside a running driver.",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("CSI_DATA_DIR", DEFAULT_DATA_DIR),
        help="the driver's data dir [CSI_DATA_DIR] (default: %(default)s)",
    )
    parser.add_argument(
        "--output", "-o", choices=("text", "json"), default="text", help="(default: text)"
    )
    return parser


def inspect_main(argv: Sequence[str]) -> int:
    from csi.inspect import InspectError, inspect, render_text

    args = inspect_parser().parse_args(argv)
    try:
        view = inspect(Path(args.data_dir).absolute())
    except (InspectError, OSError) as exc:
        print(f"localvol-csi {INSPECT}: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(view.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(render_text(view)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [INSPECT]:
        return inspect_main(args[1:])
    config = config_from_args(args)
    logs.setup(config.log_level, config.log_format)
    from csi.server import serve  # imported late so --help stays fast

    try:
        return serve(config)
    except (OSError, ValueError) as exc:
        print(f"localvol-csi: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
