"""The running stack a game day acts on, found through its state directory.

``relay dev`` (and ``LocalStack``) write ``<state dir>/stack.json``: the gateway's URL and
the control socket that ``relay ps|stop|start`` use. The state directory is
``RELAY_STATE_DIR`` (default ``.relay`` in the checkout), and an experiment's
``relay_state_dir`` configuration entry. Tokens (driver, gate, dispatch, ops) are minted by
the stack's own dev issuer, whose key lives in the same directory: a game day needs no
secret of its own. Only supervised stacks (``relay dev``) can have processes killed,
frozen and started again by name.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.cloud import ROOT
from relay.devissuer import DevIssuer
from relay.supervisor import control_request
from shared_contracts.identity import Role

STATE_DIR_KEY = "relay_state_dir"  # the experiments' configuration entry
STATE_DIR_ENV = "RELAY_STATE_DIR"
TOKEN_SECONDS = 3600


class TargetError(Exception):
    """The stack cannot be reached, or cannot do what the game day asks of it."""


def state_dir_from(configuration: Mapping[str, Any] | None) -> Path:
    """The experiment's ``relay_state_dir``, else ``RELAY_STATE_DIR``, else ``.relay``."""
    value = (configuration or {}).get(STATE_DIR_KEY) or os.environ.get(STATE_DIR_ENV)
    path = Path(value) if value else ROOT / ".relay"
    return path if path.is_absolute() else ROOT / path


@dataclass
class Target:
    state_dir: Path
    state: dict[str, Any]
    _issuer: DevIssuer | None = field(default=None, repr=False)

    @classmethod
    def find(cls, configuration: Mapping[str, Any] | None = None) -> Target:
        state_dir = state_dir_from(configuration)
        path = state_dir / "stack.json"
        if not path.exists():
            raise TargetError(
                f"no running stack: {path} does not exist (start one with `make dev`, or set "
                f"{STATE_DIR_ENV} to the state directory of the one running)"
            )
        return cls(state_dir, json.loads(path.read_text()))

    @property
    def gateway_url(self) -> str:
        return str(self.state["gateway_url"])

    @property
    def cells(self) -> list[str]:
        return list(self.state.get("cells", {}).get("loads", []))

    def token(self, role: Role, driver_id: str | None = None) -> str:
        if self._issuer is None:
            self._issuer = DevIssuer.load_or_create(self.state_dir)
        sub = driver_id if role is Role.DRIVER and driver_id else f"{role.value}-gameday"
        return self._issuer.mint(
            sub, role, driver_id if role is Role.DRIVER else None, ttl_seconds=TOKEN_SECONDS
        )

    def auth(self, role: Role, driver_id: str | None = None) -> dict[str, str]:
        return {"authorization": "Bearer " + self.token(role, driver_id)}

    # --- processes, through the control socket of a supervised stack -------------------

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        path = self.state.get("control_socket")
        if not path:
            raise TargetError("the stack is not supervised: start it with `relay dev`")
        answer = control_request(Path(path), request)
        if not answer.get("ok"):
            raise TargetError(str(answer.get("error", "the stack refused the request")))
        return answer

    def processes(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.control({"command": "ps"})["processes"]}

    def resolve(self, name: str) -> list[str]:
        """The processes ``name`` stands for: itself, or a celled module's cells (``loads``
        is ``loads/cell-1`` and ``loads/cell-2`` on a two-cell stack)."""
        names = list(self.processes())
        if name in names:
            return [name]
        cells = [n for n in names if n.startswith(name + "/cell-")]
        if not cells:
            raise TargetError(f"no process named {name!r}; the processes are {', '.join(names)}")
        return cells

    def pid(self, name: str) -> int:
        row = self.processes().get(name)
        if row is None:
            raise TargetError(f"no process named {name!r}")
        if not row.get("pid"):
            raise TargetError(f"{name} is not running")
        return int(row["pid"])

    def signal(self, name: str, signum: signal.Signals) -> dict[str, int]:
        """Send ``signum`` to every process ``name`` stands for; their pids by name."""
        pids = {n: self.pid(n) for n in self.resolve(name)}
        for pid in pids.values():
            os.kill(pid, signum)
        return pids

    def each(self, command: str, name: str) -> list[str]:
        """A control command (stop, start) for every process ``name`` stands for."""
        return [
            str(self.control({"command": command, "name": n}).get("message"))
            for n in self.resolve(name)
        ]
