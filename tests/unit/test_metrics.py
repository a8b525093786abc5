"""/metrics: the families, their types and labels, and counters that move with the calls
they count (directory volumes through the real in-process server; no root needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi import metrics
from csi.config import MIB, HostPort
from csi.host import errors, observe
from csi.host.run import run
from csi.pb import csi_pb2
from tests.scrape import scrape, serving_metrics
from tests.support.driver import RunningDriver, running_driver
from tests.support.status import rpc_error
from tests.unit.support import create, create_request

LOCAL = HostPort("127.0.0.1", 0)
# name -> (type, label names), as a scraper sees them.
EXPECTED = {
    "localvol_rpc_requests": ("counter", {"method", "code"}),
    "localvol_rpc_duration_seconds": ("histogram", {"method", "code"}),
    "localvol_host_commands": ("counter", {"tool", "outcome"}),
    "localvol_host_command_duration_seconds": ("histogram", {"tool"}),
    "localvol_reconcile_duration_seconds": ("gauge", set()),
    "localvol_reconcile_runs": ("counter", {"outcome"}),
    "localvol_volumes": ("gauge", {"kind", "phase"}),
    "localvol_snapshots": ("gauge", {"kind", "phase"}),
    "localvol_group_snapshots": ("gauge", {"phase"}),
    "localvol_quarantined_records": ("gauge", {"store", "reason"}),
    "localvol_provisioned_bytes": ("gauge", {"kind"}),
    "localvol_used_bytes": ("gauge", {"holder"}),
    "localvol_data_root_free_bytes": ("gauge", set()),
    "localvol_data_root_size_bytes": ("gauge", set()),
    "localvol_directory_quota_enforced": ("gauge", set()),
    "localvol_loop_devices_attached": ("gauge", {"kind"}),
    "localvol_scrape_errors": ("gauge", {"part"}),
}
ALLOWED_LABELS = {"method", "code", "tool", "outcome", "kind", "phase", "store", "reason"}
ALLOWED_LABELS |= {"holder", "part", "le"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningDriver, int]]:
    data = tmp_path / "data"
    (data / "state" / "volumes").mkdir(parents=True)
    # A damaged record, quarantined at start-up.
    (data / "state" / "volumes" / "vol-damaged.json").write_text("{not json")
    with (
        running_driver(data, health_address=LOCAL) as driver,
        serving_metrics(driver.driver) as port,
    ):
        yield driver, port


def test_families_types_and_labels(served: tuple[RunningDriver, int]) -> None:
    driver, port = served
    create(driver.client, "pvc-shape", required=2 * MIB)
    got = scrape(port)
    for name, (kind, labels) in EXPECTED.items():
        family = got.families.get(name)
        assert family is not None, f"{name} is missing"
        assert family.type == kind, name
        assert family.documentation, f"{name} has no help text"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    ours = [n for n in got.families if n.startswith("localvol_")]
    assert sorted(ours) == sorted(EXPECTED), "a family without a test of its shape"
    for family in got.families.values():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (family.name, sample.labels)
    # Conventions: counters end in _total, units in the name, all under one prefix.
    assert "localvol_rpc_requests_total" in {
        s.name for s in got.families["localvol_rpc_requests"].samples
    }
    for name in ours:
        assert re.fullmatch(r"localvol_[a-z_]+", name)
    assert {spec.name for spec in metrics.GAUGES} <= set(ours)


def test_counters_and_histograms_follow_the_calls(served: tuple[RunningDriver, int]) -> None:
    driver, port = served
    before = scrape(port)
    assert before.value("localvol_reconcile_runs_total", outcome="ok") == 1
    assert before.value("localvol_quarantined_records", store="volume", reason="damaged") == 1
    volume = create(driver.client, "pvc-counted", required=3 * MIB)
    create(driver.client, "pvc-counted", required=3 * MIB)  # idempotent retry: counted too
    bad = rpc_error(
        lambda: driver.client.controller.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id="../escape")
        )
    )
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("localvol_rpc_requests_total", method="CreateVolume", code="OK") == 2
    assert moved("localvol_rpc_duration_seconds_count", method="CreateVolume", code="OK") == 2
    assert moved("localvol_rpc_duration_seconds_sum", method="CreateVolume", code="OK") > 0
    inf = moved("localvol_rpc_duration_seconds_bucket", method="CreateVolume", code="OK", le="+Inf")
    assert inf == 2
    assert moved("localvol_rpc_requests_total", method="DeleteVolume", code="INVALID_ARGUMENT") == 1
    assert after.value("localvol_volumes", kind="directory", phase="ready") == 1
    assert after.value("localvol_provisioned_bytes", kind="directory") == 3 * MIB
    assert after.value("localvol_data_root_free_bytes") > 0
    assert after.value("localvol_data_root_size_bytes") >= after.value(
        "localvol_data_root_free_bytes"
    )
    # Never an ID or a name as a label, nor anywhere in the text.
    assert volume.volume_id not in after.text
    assert "pvc-counted" not in after.text
    assert "escape" not in after.text
    driver.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert scrape(port).value("localvol_volumes", kind="directory", phase="ready") == 0


def test_healthz_is_still_served(served: tuple[RunningDriver, int]) -> None:
    import urllib.request

    _, port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
        assert reply.status in (200, 503)


def test_openmetrics_when_asked(served: tuple[RunningDriver, int]) -> None:
    import urllib.request

    _, port = served
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        assert reply.read().decode().rstrip().endswith("# EOF")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (None, observe.OK),
        (errors.CommandFailed("x", tool="t", returncode=1, stderr=""), observe.FAILED),
        (errors.NoSpace("x", tool="t", returncode=1, stderr=""), observe.NO_SPACE),
        (errors.ToolMissing("x", tool="t"), observe.MISSING),
        (errors.CommandTimedOut("x", tool="t", seconds=1), observe.TIMED_OUT),
        (errors.DeadlineReached("x", tool="t", seconds=1), observe.DEADLINE),
        (OSError("fork failed"), observe.ERROR),
    ],
)
def test_command_outcomes(exc: BaseException | None, outcome: str) -> None:
    told: list[tuple[str, str]] = []
    observers = observe.Observers()
    observers.add(lambda tool, outcome, seconds: told.append((tool, outcome)))

    def fake_run(argv: list[str]) -> str:
        if exc is not None:
            raise exc
        return "done"

    counted = observe.observed(fake_run, observers)
    if exc is None:
        assert counted(["mkfs.ext4", "-q"]) == "done"
    else:
        with pytest.raises(type(exc)):
            counted(["mkfs.ext4", "-q"])
    assert told == [("mkfs.ext4", outcome)]
    assert outcome in metrics.COMMAND_OUTCOMES


def test_undeclared_tool_is_not_a_command() -> None:
    told: list[str] = []
    observers = observe.Observers()
    observers.add(lambda tool, outcome, seconds: told.append(tool))

    def refuse(argv: list[str]) -> None:
        raise ValueError("not declared")

    with pytest.raises(ValueError, match="not declared"):
        observe.observed(refuse, observers)(["rm"])
    assert told == []


def test_real_run_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() itself is counted: a missing tool (PATH without it) is outcome=missing."""
    monkeypatch.setenv("PATH", str(tmp_path))
    metrics.new_registry()  # the process's counter listens from the first registry on
    series = metrics.HOST_COMMANDS.commands.labels("blkid", observe.MISSING)
    before = series._value.get()
    with pytest.raises(errors.ToolMissing):
        run(["blkid", "/dev/null"])
    assert series._value.get() == before + 1


def test_no_secret_reaches_a_scrape(served: tuple[RunningDriver, int]) -> None:
    """Secrets, names and IDs of calls that succeed and fail are nowhere in /metrics."""
    driver, port = served
    canary = "canary-5e3f9a1b-secret"
    request = create_request("pvc-with-secret", required=MIB)
    request.secrets["key"] = canary
    created = driver.client.controller.CreateVolume(request).volume
    bad = create_request(f"pvc-{canary}", required=MIB, parameters={"volumeType": canary})
    bad.secrets["key"] = canary
    assert rpc_error(lambda: driver.client.controller.CreateVolume(bad)).code() is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    text = scrape(port).text
    for needle in (canary, "pvc-with-secret", created.volume_id):
        assert needle not in text
