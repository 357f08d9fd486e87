"""SESSION scope: scratch projects, renders and assets expire after their TTL.

The seed design gives SESSION-scope namespaces a TTL (24 hours by default).
A sweeper removes expired ones from the tree (one transaction each) and
destroys their namespaces through the journal, so they disappear from the
mount and from the store together; the kernel is told which names went away.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import trio

from motionfs.core.tree import Tree, now_ns
from motionfs.motion.models import StorageScope

log = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL = 60.0


class Expiry:
    def __init__(self, tree: Tree, ttl_seconds: float) -> None:
        self.tree = tree
        self.ttl = ttl_seconds

    async def run(self) -> None:
        interval = max(0.2, min(MAX_SWEEP_INTERVAL, self.ttl / 4))
        while True:
            self.sweep()
            await trio.sleep(interval)

    def sweep(self, now: float | None = None) -> int:
        """Remove every SESSION-scope item older than the TTL; return how many."""
        now = time.time() if now is None else now
        index = self.tree.index
        expired = [
            rec.ns_id
            for rec, state in index.namespaces()
            if rec.scope is StorageScope.SESSION
            and state == "live"
            and datetime.fromisoformat(rec.created_at).timestamp() + self.ttl <= now
        ]
        for ns_id in expired:
            removed: list[int] = []
            gone: list[tuple[int, bytes]] = []
            with self.tree.changing():
                for parent, name, node in index.links_of_namespace(ns_id):
                    self.tree.remove_subtree(parent, name, node, now_ns(), removed)
                    gone.append((parent, name))
                if index.namespace_state(ns_id) == "live":  # nothing in the tree held it
                    self.tree.destroy_namespace_of(ns_id)
            self.tree.content_replaced([], [], gone, removed)
            log.info("scratch namespace %s expired after %.0fs", ns_id, self.ttl)
        return len(expired)
