"""csi.cli: sizes, defaults and --help."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from csi.cli import DEFAULT_DATA_DIR, config_from_args, parse_host_port, parse_size
from csi.config import GIB, MIB, TIB, HostPort
from csi.server import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CSI_DATA_DIR",
        "CSI_ENDPOINT",
        "CSI_NODE_ID",
        "CSI_DRIVER_NAME",
        "CSI_MAX_VOLUMES_PER_NODE",
        "CSI_DEFAULT_VOLUME_SIZE",
        "CSI_MAX_VOLUME_SIZE",
        "CSI_CAPACITY_LIMIT",
        "CSI_LOG_LEVEL",
        "CSI_LOG_FORMAT",
        "CSI_WORKERS",
        "CSI_SHUTDOWN_GRACE",
        "CSI_PLUGIN_REGISTRATION_DIR",
        "CSI_KUBELET_REGISTRATION_PATH",
        "CSI_HEALTH_ADDRESS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Gi", GIB),
        ("10G", 10 * 10**9),
        ("512Mi", 512 * MIB),
        ("0", 0),
        ("4096", 4096),
        ("2k", 2000),
        ("16Ti", 16 * TIB),
        ("1.5Gi", GIB + GIB // 2),
        (" 3Mi ", 3 * MIB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["bad", "", "Gi", "1GiB", "3mi", "-1", "-1Gi", "1Qi", "1 0"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_defaults() -> None:
    config = config_from_args([])
    assert config.data_dir == Path(DEFAULT_DATA_DIR)
    assert config.endpoint == f"unix://{DEFAULT_DATA_DIR}/csi.sock"
    assert config.node_id == socket.gethostname()
    assert config.driver_name == "localvol.csi.dev"
    assert config.topology_key == "topology.localvol.csi.dev/node"
    assert config.max_volumes_per_node == 0
    assert config.default_volume_size == GIB
    assert config.max_volume_size == 16 * TIB
    assert config.capacity_limit == 0
    assert (config.log_level, config.log_format) == ("info", "text")
    assert config.plugin_registration_dir is None
    assert config.kubelet_registration_path is None
    assert config.registration_socket is None
    assert config.health_address is None


def test_endpoint_follows_data_dir(tmp_path: Path) -> None:
    config = config_from_args(["--data-dir", str(tmp_path / "d")])
    assert config.data_dir == tmp_path / "d"
    assert config.endpoint == f"unix://{tmp_path}/d/csi.sock"


def test_relative_data_dir_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_from_args(["--data-dir", "rel"])
    assert config.data_dir == tmp_path / "rel"
    assert config.endpoint == f"unix://{tmp_path}/rel/csi.sock"


def test_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSI_NODE_ID", "from-env")
    monkeypatch.setenv("CSI_CAPACITY_LIMIT", "5Gi")
    config = config_from_args(
        [
            "--endpoint",
            "tcp://127.0.0.1:10000",
            "--max-volumes-per-node",
            "7",
            "--log-format",
            "json",
        ]
    )
    assert config.node_id == "from-env"
    assert config.capacity_limit == 5 * GIB
    assert config_from_args(["--max-volume-size", "40M"]).max_volume_size == 40 * 10**6
    assert config_from_args(["--default-volume-size", "0.5Gi"]).default_volume_size == GIB // 2
    assert config.endpoint == "tcp://127.0.0.1:10000"
    assert config.max_volumes_per_node == 7
    assert config.log_format == "json"
    assert config_from_args(["--node-id", "flag-wins"]).node_id == "flag-wins"


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-volumes-per-node", "-1"],
        ["--workers", "0"],
        ["--node-id", "x" * 193],
        ["--default-volume-size", "lots"],
        ["--log-level", "chatty"],
        ["--kubelet-registration-path", "/var/lib/kubelet/plugins/x/csi.sock"],
        ["--plugin-registration-dir", "/r", "--endpoint", "tcp://127.0.0.1:1"],
        ["--plugin-registration-dir", "/r", "--kubelet-registration-path", "relative.sock"],
        ["--plugin-registration-dir", "/r", "--driver-name", "../escape"],
        ["--health-address", "9808"],
        ["--health-address", ":http"],
        ["--health-address", ":65536"],
        ["--health-address", "::1:9808"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        config_from_args(argv)
    assert info.value.code == 2
    assert "localvol-csi" in capsys.readouterr().err


def test_switches_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSI_OVERCOMMIT", "YES")
    monkeypatch.setenv("CSI_ASSIGN_SNAPSHOT_CONTENTS", "1")
    monkeypatch.setenv("CSI_VOLUME_CONDITION", "no")
    config = config_from_args([])
    assert config.overcommit
    assert config.assign_snapshot_contents
    assert not config.legacy_volume_condition


def test_assigning_snapshot_contents_needs_a_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside a pod the driver refuses to start (the CLI prints the reason), making nothing."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    data = tmp_path / "data"
    config = config_from_args(["--assign-snapshot-contents", "--data-dir", str(data)])
    with pytest.raises(ValueError, match="--assign-snapshot-contents needs the Kubernetes API"):
        build(config)
    assert not data.exists()


def test_help_lists_options() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "csi", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--endpoint",
        "--node-id",
        "--data-dir",
        "--driver-name",
        "--log-level",
        "--log-format",
        "--max-volumes-per-node",
        "--plugin-registration-dir",
        "--kubelet-registration-path",
        "--health-address",
    ):
        assert option in proc.stdout


def test_registration_flags() -> None:
    config = config_from_args(
        [
            "--endpoint=unix:///csi/csi.sock",
            "--plugin-registration-dir=/var/lib/kubelet/plugins_registry",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/localvol.csi.dev/csi.sock",
        ]
    )
    assert config.plugin_registration_dir == Path("/var/lib/kubelet/plugins_registry")
    assert config.kubelet_registration_path == Path(
        "/var/lib/kubelet/plugins/localvol.csi.dev/csi.sock"
    )
    assert config.registration_socket == Path(
        "/var/lib/kubelet/plugins_registry/localvol.csi.dev-reg.sock"
    )


def test_kubelet_path_defaults_to_the_endpoint_socket(tmp_path: Path) -> None:
    """A driver on the host itself: the kubelet sees the socket where the driver made it."""
    config = config_from_args(["--data-dir", str(tmp_path), "--plugin-registration-dir", "/r"])
    assert config.kubelet_registration_path == tmp_path / "csi.sock"


def test_registration_and_health_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSI_PLUGIN_REGISTRATION_DIR", "/reg")
    monkeypatch.setenv("CSI_KUBELET_REGISTRATION_PATH", "/host/csi.sock")
    monkeypatch.setenv("CSI_HEALTH_ADDRESS", ":9808")
    monkeypatch.setenv("CSI_DRIVER_NAME", "other.example.com")
    config = config_from_args([])
    assert config.registration_socket == Path("/reg/other.example.com-reg.sock")
    assert config.kubelet_registration_path == Path("/host/csi.sock")
    assert config.health_address == HostPort("", 9808)
    assert config_from_args(["--health-address", "127.0.0.1:1"]).health_address == HostPort(
        "127.0.0.1", 1
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9808", HostPort("", 9808)),
        ("0.0.0.0:9808", HostPort("0.0.0.0", 9808)),
        ("localhost:80", HostPort("localhost", 80)),
        ("[::]:9808", HostPort("::", 9808)),
        ("[::1]:0", HostPort("::1", 0)),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


def test_host_port_text() -> None:
    assert str(HostPort("", 9808)) == ":9808"
    assert str(HostPort("::1", 9808)) == "[::1]:9808"
