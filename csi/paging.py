"""Page tokens for ListVolumes and ListSnapshots: "after:<last ID returned>".

Keyed on the last ID rather than an offset, so entries created or deleted between pages
never cause a skip or a repeat. Anything else is refused with ABORTED, as CSI asks.
"""

from __future__ import annotations

from csi.errors import Aborted, InvalidArgument
from csi.layout import is_valid_id

PREFIX = "after:"


def issue(last_id: str) -> str:
    return PREFIX + last_id


def start_after(token: str) -> str:
    """The ID a page starts after ("" for the first page)."""
    if not token:
        return ""
    last_id = token.removeprefix(PREFIX)
    if not token.startswith(PREFIX) or not is_valid_id(last_id):
        raise Aborted("starting_token is not one this driver issued")
    return last_id


def check_max_entries(max_entries: int) -> int:
    if max_entries < 0:
        raise InvalidArgument("max_entries must not be negative")
    return max_entries
