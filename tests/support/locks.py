"""Two holders of one lock, as two vigil processes at once: what order they held it in."""

from __future__ import annotations

import threading
import time


def turns(hold, take) -> list[str]:
    """`hold()` is entered in a thread and kept half a second; `take()` is entered meanwhile. Returns the
    order of what happened: a lock that makes the second wait gives first holds, first done, second holds.
    Each is a context manager factory: flock is per open file, so two threads stand for two processes.
    """
    order: list[str] = []

    def first():
        with hold():
            order.append("first holds")
            time.sleep(0.5)
            order.append("first done")

    holder = threading.Thread(target=first)
    holder.start()
    while not order:
        time.sleep(0.01)
    with take():
        order.append("second holds")
    holder.join()
    return order
