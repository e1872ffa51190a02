"""When a replica counts as dead, so that its claims can be handed to the survivors.

Each PostgreSQL replica holds a session advisory lock on its own id while it lives, and its
claims carry that id. A lock seen free once is not proof enough: after a PostgreSQL restart every
replica has lost its lock until it reconnects. So a replica is declared dead only once its lock
has been seen free at every check for `grace_s` (longer than a reconnect takes).
"""

from __future__ import annotations

#: How long a replica's lock must stay free before its claims are taken back.
GRACE_S = 10.0
#: How often a replica re-takes its own lock if lost and looks for dead ones.
CHECK_EVERY_S = 2.0


def judge(
    suspects: dict[int, float], free_now: set[int], *, now: float, grace_s: float = GRACE_S
) -> tuple[dict[int, float], set[int]]:
    """(suspects to remember: id → first seen free, replicas now declared dead).

    `suspects` is the previous answer; `free_now` the ids whose claims exist but whose lock is
    free at this check. An id missing from `free_now` is forgotten (alive again, or nothing left
    to reclaim). A failed check must reset `suspects` to {} (free for 10 s means *seen* free)."""
    seen = {replica: suspects.get(replica, now) for replica in free_now}
    dead = {replica for replica, since in seen.items() if now - since >= grace_s}
    return {replica: since for replica, since in seen.items() if replica not in dead}, dead
