"""The upstream csi-sanity suite against the real driver, once per volume type."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import DriverProcess
from tests.support.prerequisites import need, need_root, need_tool

# Every spec the advertised capabilities enable; a change here must be explained in the
# README's csi-sanity section.
EXPECTED_PASSED = 84
SUMMARY = re.compile(
    r"(?P<passed>\d+) Passed \| (?P<failed>\d+) Failed \|(?: \d+ Flaked \|)?"
    r" (?P<pending>\d+) Pending \| (?P<skipped>\d+) Skipped"
)
CASES = {
    "directory": ({"volumeType": "directory"}, "mount"),
    "loop-ext4": ({"volumeType": "loop", "fsType": "ext4"}, "mount"),
    "loop-xfs": ({"volumeType": "loop", "fsType": "xfs"}, "mount"),
    "loop-block": ({"volumeType": "loop"}, "block"),
}
RESULTS = Path(__file__).resolve().parents[2] / "build" / "sanity-summary.txt"


def csi_sanity_binary() -> str | None:
    candidates = [os.environ.get("CSI_SANITY"), shutil.which("csi-sanity")]
    gobin = Path(os.environ.get("GOBIN", Path.home() / "go" / "bin")) / "csi-sanity"
    candidates.append(str(gobin))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    """The driver as users run it: the CLI in its own process, without test flags."""
    driver = DriverProcess(
        tmp_path / "data",
        tmp_path / "logs",
        node_id="sanity-node",
        debug=False,
        log_file=tmp_path / "driver.log",
    )
    try:
        driver.start()
        yield f"unix://{driver.socket}"
        assert driver.stop() == 0
        assert not driver.socket.exists(), "socket not removed on shutdown"
    finally:
        driver.kill()


@pytest.mark.sanity
@pytest.mark.parametrize("case", list(CASES))
def test_csi_sanity(case: str, endpoint: str, tmp_path: Path) -> None:
    need_root()
    binary = csi_sanity_binary()
    need(binary is not None, "csi-sanity not found (hack/test builds it with go install)")
    assert binary is not None
    need_tool("mkfs.xfs")
    parameters, access_type = CASES[case]
    params_file = tmp_path / "params.yaml"
    params_file.write_text("".join(f'{k}: "{v}"\n' for k, v in parameters.items()))
    argv = [
        binary,
        f"--csi.endpoint={endpoint}",
        f"--csi.mountdir={tmp_path / 'mount'}",
        f"--csi.stagingdir={tmp_path / 'staging'}",
        f"--csi.testvolumeparameters={params_file}",
        f"--csi.testvolumeaccesstype={access_type}",
        "--csi.testvolumesize=1073741824",
        "--ginkgo.no-color",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    match = SUMMARY.search(output)
    assert match, f"no csi-sanity summary in output:\n{output[-4000:]}"
    counts = {k: int(v) for k, v in match.groupdict().items()}
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(f"{case}: {match.group(0)}\n")
    assert counts["failed"] == 0, output[-8000:]
    assert proc.returncode == 0, output[-4000:]
    assert counts["passed"] == EXPECTED_PASSED, f"{case}: {match.group(0)}"
