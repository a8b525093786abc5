"""proto/pluginregistration.proto is the kubelet's wire: package, messages, field names,
numbers and types, and service methods equal those of the kubelet's own api.proto at the
pinned version (fetched from the Go module proxy, never committed)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tests.manifests.support import ROOT, module_dir

# The kubelet of the Kubernetes release the manifests target (support.K8S_VERSION).
KUBELET_MODULE = ("k8s.io/kubelet", "v0.37.2")
UPSTREAM_DIR = "pkg/apis/pluginregistration/v1"


def compiled(proto_dir: Path, name: str, out: Path) -> descriptor_pb2.FileDescriptorProto:
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    target = out / f"{name}.pb"
    argv = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--descriptor_set_out={target}", name]
    assert protoc.main(argv) == 0, f"protoc could not compile {proto_dir / name}"
    files = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes()).file
    assert len(files) == 1
    return files[0]


def wire(file: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    return {
        "package": file.package,
        "messages": {
            m.name: [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field]
            for m in file.message_type
        },
        "enums": {e.name: [(v.name, v.number) for v in e.value] for e in file.enum_type},
        "services": {
            s.name: {
                m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                for m in s.method
            }
            for s in file.service
        },
    }


def test_registration_wire_matches_the_kubelets(tmp_path: Path) -> None:
    upstream = module_dir(*KUBELET_MODULE) / UPSTREAM_DIR
    (tmp_path / "upstream").mkdir()
    (tmp_path / "ours").mkdir()
    theirs = compiled(upstream, "api.proto", tmp_path / "upstream")
    ours = compiled(ROOT / "proto", "pluginregistration.proto", tmp_path / "ours")
    assert wire(ours) == wire(theirs)
    assert wire(ours)["services"], "no service compared"
