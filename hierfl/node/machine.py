"""A node's state machine, built with `transitions` from the protocol table.

It mirrors and documents what the Lua scripts decide; it never decides. A node advances it
after a script accepted a call, and re-syncs it from Redis whenever it reads its status.
"""

from __future__ import annotations

from transitions import Machine

from hierfl.protocol import TRANSITIONS, NodeStatus, Role


def state_name(status: int) -> str:
    return NodeStatus(status).name.lower()


class NodeMachine:
    """The statuses a node of `role` moves through, with one trigger per transition script."""

    def __init__(self, role: Role, status: int = NodeStatus.DEPLOYED) -> None:
        self.role = role
        self.machine = Machine(
            model=self,
            states=[state_name(s) for s in NodeStatus],
            transitions=machine_transitions(role),
            initial=state_name(status),
            auto_transitions=False,
        )

    @property
    def status(self) -> NodeStatus:
        return NodeStatus[self.state.upper()]

    def sync(self, status: int) -> None:
        """Adopt the status Redis holds (the scripts are the authority)."""
        self.machine.set_state(state_name(status))


def machine_transitions(role: Role) -> list[dict]:
    return [
        {"trigger": t.name, "source": [state_name(s) for s in t.source], "dest": state_name(t.dest)}
        for t in TRANSITIONS
        if role in t.roles
    ]
