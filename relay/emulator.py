"""The local AWS emulator: moto's server, with SQS FIFO message groups kept in order.

moto 5.2 counts a received message as in flight until a later receive walks past it, even
after its visibility timeout has run out. When a whole group's in-flight messages time
out together (a consumer killed mid-batch, or a batch that failed and was left to time
out), the next receive skips each of them while the ones after it still look in flight,
and hands out only the *last* one: the group's order is broken. Real SQS counts a
message as in flight only while it is invisible. :func:`keep_fifo_groups_in_order`
teaches moto the same; ``relay.stack`` runs the emulator as ``python -m relay.emulator``
(moto server's own arguments).

The local SQS event source (:mod:`relay.eventsource`) does not rely on this alone: it keeps
its own per-group hold, but that is lost when the runner restarts, and this is not.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

log = logging.getLogger("relay.emulator")


def keep_fifo_groups_in_order() -> Callable[[], None]:
    """Patch moto's SQS: a FIFO group is locked only by messages still invisible.

    Returns a function that undoes the patch (for tests).
    """
    from moto.sqs.models import Queue

    original = Queue.__dict__.get("pending_message_groups")
    if not isinstance(original, property):  # moto changed: say so, run unpatched
        log.warning(
            "moto's SQS Queue has no pending_message_groups property; FIFO groups "
            "are not patched (see relay/emulator.py)"
        )
        return lambda: None

    def pending_message_groups(self: Queue) -> set[str]:
        return {
            m.group_id for m in self.pending_messages if m.group_id is not None and not m.visible
        }

    Queue.pending_message_groups = property(pending_message_groups)  # type: ignore[assignment]

    def undo() -> None:
        Queue.pending_message_groups = original  # type: ignore[assignment]

    return undo


def main(argv: list[str] | None = None) -> None:
    """``python -m relay.emulator [moto.server arguments]``."""
    keep_fifo_groups_in_order()
    from moto.server import main as moto_server

    moto_server(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
