"""How node log lines name their node: once, and the library logger after it when another
module logged (``demo#0/client/c1: ...``, ``demo#0/client/c1 hierfl.store.hub: ...``).

A node logs as ``hierfl.node.<slot>``; many nodes of one process run as threads named by
their slot, a node process alone as its main thread. No heavy imports here: `hierfl node`
sets up logging before it loads torch.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(origin)s: %(message)s"
NODE_LOGGER = "hierfl.node."


def name_the_origin(record: logging.LogRecord) -> bool:
    """A handler filter that sets `record.origin` (see the module's doc); keeps every record."""
    node = record.name[len(NODE_LOGGER):] if record.name.startswith(NODE_LOGGER) else ""
    if "/" in node and record.threadName in (node, "MainThread"):
        record.origin = node
    elif record.threadName == "MainThread":
        record.origin = record.name
    else:
        record.origin = f"{record.threadName} {record.name}"
    return True


def node_handler(handler: logging.Handler) -> logging.Handler:
    """`handler` with the node log format."""
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(name_the_origin)
    return handler
