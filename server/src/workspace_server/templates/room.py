"""Room on the data dir for what the server writes of templates (uploads, layers, build
contexts): admitted to its free space as the bytes grow, so they never take what sandbox
disks were promised or the server's reserve (store/disk_space.py, `admit_write`)."""

from __future__ import annotations

from collections.abc import Callable

ROOM_STEP = 8 << 20  # small pieces are admitted this much at a time

# Admits `size` more bytes to the data dir's file system, or raises RESOURCE_EXHAUSTED.
Room = Callable[[int], None]


class RoomMeter:
    """Keeps a growing total admitted: whatever the total passes what was admitted is asked
    for before it is written, at least ROOM_STEP at a time (a large file at once)."""

    def __init__(self, room: Room | None) -> None:
        self.room = room
        self.admitted = 0

    def grow_to(self, total: int) -> None:
        if self.room is not None and total > self.admitted:
            step = max(total - self.admitted, ROOM_STEP)
            self.room(step)
            self.admitted += step
