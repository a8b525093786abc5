"""CSI Identity: who the driver is, what it offers, and whether it is healthy."""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from csi import __version__
from csi.config import Config
from csi.errors import FailedPrecondition
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.readiness import Readiness, fault

Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion


class IdentityService(csi_pb2_grpc.IdentityServicer):
    def __init__(self, config: Config, readiness: Readiness) -> None:
        self._config = config
        self._readiness = readiness

    def GetPluginInfo(
        self, request: csi_pb2.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(
            name=self._config.driver_name, vendor_version=__version__
        )

    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        types = (
            Service.CONTROLLER_SERVICE,
            Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
            Service.GROUP_CONTROLLER_SERVICE,
            Service.SNAPSHOT_ACCESSIBILITY_CONSTRAINTS,
            Service.SNAPSHOT_METADATA_SERVICE,
        )
        capabilities = [csi_pb2.PluginCapability(service=Service(type=t)) for t in types]
        capabilities.append(
            csi_pb2.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE))
        )
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=capabilities)

    def Probe(
        self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ProbeResponse:
        problem = fault(self._readiness, self._config.data_dir)
        if problem:
            raise FailedPrecondition(problem)
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self._readiness.ready))
