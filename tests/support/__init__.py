"""What the test tiers share, one module per thing.

- ``prerequisites``: skip (or, under CI, fail) when root, a tool or a device is missing.
- ``driver``: the driver in this process (``running_driver``) or as its own process
  (``DriverProcess``, ``driver_subprocess``), and the gRPC client for either.
- ``kubelet``: the caller's side: capabilities, volume flavours, and ``Kubelet``, which plays
  kubelet and provisioner (create, stage, publish, unpublish, unstage, delete).
- ``status``: what a call ended with (``status``, ``error_of``, ``rpc_error``, ``raises_code``).
- ``host``: mounts and loop devices, read from /proc and /sys by the tests themselves, and
  only ever for paths a test made (its own root, its own images).
- ``invariants``: what must hold between operations, and that nothing is left behind.
"""
