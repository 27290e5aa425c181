"""Where versions run side by side: the local stack, in this process (tests) or through
``relay dev``'s control socket (``relay deploy``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.supervisor import control_request

from .exceptions import ReleaseError

if TYPE_CHECKING:
    from relay.stack import LocalStack


class LocalStackHost:
    """A :class:`~relay.stack.LocalStack` this process runs."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def url(self, module: str) -> str:
        return self.stack.module_url(module)

    def start(self, module: str, source: Path, version: str) -> str:
        return self.stack.start_version(module, source, version).url

    def promote(self, module: str, version: str) -> None:
        self.stack.promote_version(module, version)

    def retire(self, module: str, version: str) -> None:
        self.stack.retire_version(module, version)


class ControlSocketHost:
    """The running ``relay dev``, through its control socket."""

    def __init__(self, socket_path: Path, modules: dict[str, str]) -> None:
        self.socket_path = socket_path
        self.modules = modules  # module -> URL, as stack.json had them

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = control_request(self.socket_path, request)
        if not answer.get("ok"):
            raise ReleaseError(answer.get("error", "the local stack refused"))
        return answer

    def url(self, module: str) -> str:
        if module not in self.modules:
            raise ReleaseError(f"the local stack runs no module named {module!r}")
        return self.modules[module]

    def start(self, module: str, source: Path, version: str) -> str:
        request = {"command": "version-start", "module": module, "version": version}
        answer = self._ask(request | {"source": str(source)})
        return str(answer["url"])

    def promote(self, module: str, version: str) -> None:
        self._ask({"command": "version-promote", "module": module, "version": version})

    def retire(self, module: str, version: str) -> None:
        self._ask({"command": "version-retire", "module": module, "version": version})
