"""How many more loop devices this host can hand out.

The kernel makes a new loop device on demand through /dev/loop-control (``losetup --find``
asks it), so loop devices run out only where that node is missing, as in a container
that was given a fixed set of /dev/loopN nodes: then the free ones are all there is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYS_BLOCK = Path("/sys/block")
LOOP_CONTROL = Path("/dev/loop-control")


@dataclass(frozen=True)
class LoopSpace:
    devices: int  # loop devices that exist
    bound: int  # of those, attached to a file
    on_demand: bool  # /dev/loop-control can make more

    @property
    def exhausted(self) -> bool:
        return not self.on_demand and self.bound >= self.devices


def read(sys_block: Path = SYS_BLOCK, control: Path = LOOP_CONTROL) -> LoopSpace:
    devices = bound = 0
    try:
        entries = [e for e in sys_block.iterdir() if e.name.startswith("loop")]
    except OSError:
        entries = []
    for entry in entries:
        devices += 1
        if (entry / "loop" / "backing_file").exists():
            bound += 1
    return LoopSpace(devices=devices, bound=bound, on_demand=control.is_char_device())
