"""hierfl: hierarchical federated learning coordinated by Lua scripts inside Redis."""

__version__ = "0.1.0"
