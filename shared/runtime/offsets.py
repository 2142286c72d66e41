"""Per-partition offset bookkeeping: which records are in flight, and the offset that may be
committed — never past the lowest unfinished record (Parallel Consumer's rule)."""

from __future__ import annotations

from shared.runtime.records import TopicPartitionKey


class OffsetTracker:
    """Offsets start in increasing order per partition and finish in any order."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartitionKey, set[int]] = {}
        self._next: dict[TopicPartitionKey, int] = {}
        self._dirty: set[TopicPartitionKey] = set()

    def started(self, tp: TopicPartitionKey, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def skipped(self, tp: TopicPartitionKey, offset: int) -> None:
        """A record done without being started (another group's retry)."""
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)
        self._dirty.add(tp)

    def finished(self, tp: TopicPartitionKey, offset: int) -> bool:
        """Mark done; False when the record was not in flight (its partition was revoked)."""
        pending = self._pending.get(tp)
        if pending is None or offset not in pending:
            return False
        pending.discard(offset)
        self._dirty.add(tp)
        return True

    def committable(self, tp: TopicPartitionKey) -> int | None:
        """The offset to commit for `tp`: the lowest unfinished one, else the next to read."""
        pending = self._pending.get(tp)
        if pending:
            return min(pending)
        return self._next.get(tp)

    def take_dirty(self) -> dict[TopicPartitionKey, int]:
        """Committable offsets of the partitions that moved since the last call."""
        moved = {}
        for tp in self._dirty:
            offset = self.committable(tp)
            if offset is not None:
                moved[tp] = offset
        self._dirty.clear()
        return moved

    def in_flight(self, tp: TopicPartitionKey | None = None) -> int:
        if tp is not None:
            return len(self._pending.get(tp, ()))
        return sum(len(p) for p in self._pending.values())

    def position(self, tp: TopicPartitionKey) -> int | None:
        """The offset after the last record started or skipped on `tp`."""
        return self._next.get(tp)

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._next)

    def is_pending(self, tp: TopicPartitionKey, offset: int) -> bool:
        return offset in self._pending.get(tp, ())

    def forget(self, tps: list[TopicPartitionKey]) -> None:
        """Drop revoked partitions: what was in flight there is redelivered to the next owner."""
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._dirty.discard(tp)
