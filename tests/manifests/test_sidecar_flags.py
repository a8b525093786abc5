"""Every argument given to a sidecar is a flag that sidecar has, at the pinned version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.manifests.support import UPSTREAM_SIDECARS, build, module_dir

# Image -> (Go module, command directory). The module version is the image's tag.
FETCHED = {
    "registry.k8s.io/sig-storage/csi-provisioner": (
        "github.com/kubernetes-csi/external-provisioner/v6",
        "cmd/csi-provisioner",
    ),
    "registry.k8s.io/sig-storage/csi-snapshotter": (
        "github.com/kubernetes-csi/external-snapshotter/v8",
        "cmd/csi-snapshotter",
    ),
    "registry.k8s.io/sig-storage/snapshot-controller": (
        "github.com/kubernetes-csi/external-snapshotter/v8",
        "cmd/snapshot-controller",
    ),
    "registry.k8s.io/sig-storage/csi-resizer": (
        "github.com/kubernetes-csi/external-resizer/v2",
        "cmd/csi-resizer",
    ),
}
RECORDED = yaml.safe_load((Path(__file__).parent / "sidecar_flags.yaml").read_text())
# klog's flags, which every sidecar registers through klog.InitFlags.
KLOG_FLAGS = {"v", "vmodule", "add_dir_header", "alsologtostderr", "log_backtrace_at"}
FLAG_DEFINITION = re.compile(
    r"\.(?:String|Bool|Int|Int64|Uint|Uint64|Duration|Float32|Float64|Var|Func)(?:Var|Slice)?\(\s*"
    r"(?:&?[\w.\[\]()]+,\s*)?\"([a-z][a-z0-9-]*)\""
)


def defined_flags(source: Path) -> set[str]:
    found: set[str] = set()
    for path in source.rglob("*.go"):
        if not path.name.endswith("_test.go"):
            found |= set(FLAG_DEFINITION.findall(path.read_text(errors="replace")))
    return found


def flags_of(image: str, tag: str) -> set[str]:
    if image in RECORDED:
        assert RECORDED[image]["tag"] == tag, f"{image}: recorded flags are for another tag"
        return set(RECORDED[image]["flags"]) | KLOG_FLAGS
    module, command = FETCHED[image]
    source = module_dir(module, tag)
    flags = defined_flags(source / command)
    go_mod = (source / "go.mod").read_text()
    command_source = "".join(p.read_text() for p in (source / command).rglob("*.go"))
    lib = re.search(r"github.com/kubernetes-csi/csi-lib-utils (v[\w.-]+)", go_mod)
    if lib and "standardflags." in command_source:
        utils = module_dir("github.com/kubernetes-csi/csi-lib-utils", lib.group(1))
        flags |= defined_flags(utils / "standardflags")
    if "AddFlag(" in command_source:  # component-base feature gates: --feature-gates
        flags.add("feature-gates")
    return flags | KLOG_FLAGS


def sidecar_containers() -> list[tuple[str, str, dict[str, object]]]:
    found = []
    # The registrar and livenessprobe run only with the upstream-sidecars component.
    builds = ("deploy/overlays/kind", "deploy/overlays/multinode", "deploy/snapshot")
    for directory in (*builds, UPSTREAM_SIDECARS):
        for obj in build(directory):
            pod = obj.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                image, _, tag = container["image"].partition(":")
                if image in FETCHED or image in RECORDED:
                    found.append((directory, f"{image}:{tag}", container))
    return found


def test_every_sidecar_is_known() -> None:
    images = {image.partition(":")[0] for _, image, _ in sidecar_containers()}
    assert images == set(FETCHED) | set(RECORDED), images


@pytest.mark.parametrize(
    ("where", "image", "container"),
    sidecar_containers(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_sidecar_arguments_exist(where: str, image: str, container: dict[str, object]) -> None:
    name, _, tag = image.partition(":")
    known = flags_of(name, tag)
    assert len(known - KLOG_FLAGS) > 3, f"no flags found in the source of {image}"
    args = container.get("args", [])
    assert isinstance(args, list)
    unknown = [a for a in args if a.startswith("-") and a.lstrip("-").split("=")[0] not in known]
    assert not unknown, f"{where}: {container['name']} ({image}) has no flags {unknown}"
