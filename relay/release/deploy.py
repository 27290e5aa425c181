"""One module's release, end to end: the new version beside the stable one, its contract
checked before any traffic, the controller's steps, then promotion or rollback.

``deploy()`` is what ``relay deploy <module> --ref <git ref | dir>`` runs against the local
stack (and what a test runs against a :class:`~relay.stack.LocalStack` it started):

1. **source**: a directory is used as it is; a git ref is checked out once into
   ``.relay/versions/<commit>`` (``git worktree``), so any commit can be rehearsed without
   touching the working tree. The version label is the commit, or the directory's name and
   a hash of its Python sources;
2. **start**: the host runs that version of the module as its own process (locally
   ``<module>@<version>``, with the module's environment: the same tables and queues);
3. **contract**: :func:`relay.release.contract.check_contract` calls it with the published
   contract's smoke requests; a version with any problem is stopped and gets no traffic;
4. **release**: a :class:`~gateway.release.state.Release` naming both versions is written to
   the control table and the :class:`~relay.release.controller.ReleaseController` steps it,
   judging the canary against the stable version over the same seconds;
5. **after**: once every gateway has read the end of the release, promoted, the host makes
   the new process the module's (the old one stops); rolled back, the new process stops.

Nothing else restarts: the gateways pick up every step from the control table.

In AWS (``relay release --target aws``, :class:`relay.release.aws.AwsAliasHost`) the host
is a :class:`LabelledVersionHost`: ``start`` deploys the module's stack (a new version on
its ``canary`` alias), the labels are Lambda version numbers the host reads (the stable
URL is IAM-authenticated: no unsigned ``/healthz``), promotion moves ``live`` by a stack
update and retirement has nothing to stop.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx

from gateway.release.state import Release, ReleaseStore
from gateway.release.stats import StatsStore

from .contract import ContractReport, check_contract
from .controller import Outcome, Progress, ReleaseController
from .exceptions import ReleaseError
from .policy import Policy

VERSION_HEADER = "x-relay-version"
# After a release ends, the process that leaves service (the canary rolled back, or the old
# stable version after a promotion) runs on until every gateway has read the release's end
# (they read the releases every second) and its last calls are answered: stopped earlier,
# its calls would fail and count against the module's breaker.
DRAIN_SECONDS = 3.0


class VersionHost(Protocol):
    """Runs versions of modules side by side (the local stack; in AWS, the aliases)."""

    def url(self, module: str) -> str: ...

    def start(self, module: str, source: Path, version: str) -> str: ...

    def promote(self, module: str, version: str) -> None: ...

    def retire(self, module: str, version: str) -> None: ...


@runtime_checkable
class LabelledVersionHost(VersionHost, Protocol):
    """A host that names its versions itself (in AWS, Lambda version numbers): the stable
    one's label comes from the host, not from an unsigned ``GET /healthz`` on its URL, and
    the canary's is known only once :meth:`start` has deployed it."""

    def stable_version(self, module: str) -> str: ...

    def canary_version(self, module: str) -> str: ...


class AlreadyRunning(ValueError):
    """The version to release is the one the module already runs."""


@dataclass(frozen=True)
class Source:
    """Where a version's code is, and its label."""

    path: Path
    version: str


def resolve_source(ref: str, *, repo: Path, versions_dir: Path) -> Source:
    """A directory as it is, or a git ref checked out (once) under ``versions_dir``."""
    path = Path(ref)
    if path.is_dir():
        return Source(path.resolve(), directory_version(path))
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"{ref!r} is neither a directory nor a git ref of {repo}") from None
    short = commit[:10]
    tree = versions_dir / short
    if not (tree / ".git").exists():
        versions_dir.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "add", "--detach", "--force", str(tree), commit)
    return Source(tree.resolve(), short)


def directory_version(path: Path) -> str:
    """``<name>-<hash>``: the directory's name and a hash of its Python sources, so two
    different trees never share a label."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.py")):
        if ".venv" in file.parts or "__pycache__" in file.parts:
            continue
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.resolve().name)
    return f"{name[:24]}-{digest.hexdigest()[:8]}"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def running_version(url: str) -> str:
    """The version a module process says it is (its ``x-relay-version``)."""
    answer = httpx.get(url.rstrip("/") + "/healthz", timeout=5.0)
    return answer.headers.get(VERSION_HEADER, "unknown")


@dataclass(frozen=True)
class DeployResult:
    """How a deploy ended: refused before traffic (``contract`` has the problems), or the
    controller's outcome."""

    module: str
    version: str
    contract: ContractReport | None
    outcome: Outcome | None
    # the version the module ran before and its URL (a celled module's failed health gate
    # puts a cell back on it: relay/release/cells.py)
    stable_version: str | None = None
    stable_url: str | None = None

    @property
    def promoted(self) -> bool:
        return self.outcome is not None and self.outcome.promoted

    @property
    def exit_code(self) -> int:
        """0 promoted, 1 rolled back (or stopped by someone else), 2 refused before traffic."""
        if self.outcome is None:
            return 2
        return 0 if self.outcome.promoted else 1


def release_id(module: str, version: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{module}-{stamp}-{version[:16]}-{uuid.uuid4().hex[:4]}"


def deploy(
    module: str,
    source: Source,
    *,
    host: VersionHost,
    store: ReleaseStore,
    stats: StatsStore,
    policy: Policy,
    check: Callable[[str, str], ContractReport],
    on_progress: Callable[[Progress], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    actor: str = "relay deploy",
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Release ``source`` as the next version of ``module`` (module docstring).
    ``check(module, url)`` is the contract check; ``on_step`` hears each phase."""
    say = on_step or (lambda _: None)
    running = store.get(module)
    if running is not None and running.phase == "running":
        raise ValueError(
            f"{module} already has release {running.release_id} running "
            f"(by {running.updated_by or 'someone'}); roll it back first"
        )
    stable_url = host.url(module)
    labels = host if isinstance(host, LabelledVersionHost) else None
    if labels is None:
        stable_version = running_version(stable_url)
        if stable_version == source.version:
            raise AlreadyRunning(f"{module} already runs version {source.version}")
    else:
        stable_version = labels.stable_version(module)
    say(f"starting {module}@{source.version} from {source.path}")
    canary_url = host.start(module, source.path, source.version)
    version = source.version
    if labels is not None:
        version = labels.canary_version(module)
        if version == stable_version:
            raise AlreadyRunning(f"{module} already runs version {version}")
        say(f"{module}@{source.version} is version {version} (live: {stable_version})")
    say(f"checking {module}@{version} against {module}'s published contract")
    # a cell's unit (loads/cell-1) keeps its module's contract
    report = check(module.partition("/")[0], canary_url)
    if not report.ok:
        host.retire(module, version)
        return DeployResult(module, version, report, None, stable_version, stable_url)
    say(f"contract kept ({report.calls} calls); releasing to drivers in steps {policy.steps}")
    release = Release(
        module=module,
        release_id=release_id(module, version, clock()),
        stable_version=stable_version,
        canary_version=version,
        canary_url=canary_url,
        stable_url=stable_url,
        steps=policy.steps,
    )
    controller = ReleaseController(
        store, stats, policy, clock=clock, sleep=sleep, on_progress=on_progress, actor=actor
    )
    outcome = controller.run(release)
    _finish(
        host, store, release, outcome, stable_url, say=say, actor=actor, clock=clock, sleep=sleep
    )
    return DeployResult(module, version, report, outcome, stable_version, stable_url)


def resume(
    module: str,
    *,
    host: VersionHost,
    store: ReleaseStore,
    stats: StatsStore,
    policy: Policy,
    on_progress: Callable[[Progress], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    actor: str = "relay deploy --resume",
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Take over ``module``'s running release whose controller stopped (a closed terminal, a
    crash): judged from its stored step on, then finished as :func:`deploy` finishes."""
    say = on_step or (lambda _: None)
    running = store.get(module)
    if running is None or running.phase != "running":
        raise ValueError(f"{module} has no release running")
    say(
        f"resuming release {running.release_id} of {module}@{running.canary_version} "
        f"at step {running.step + 1}/{len(running.steps)} ({running.weight:g}%)"
    )
    controller = ReleaseController(
        store, stats, policy, clock=clock, sleep=sleep, on_progress=on_progress, actor=actor
    )
    outcome = controller.run(running)
    stable_url = running.stable_url or host.url(module)
    _finish(
        host, store, running, outcome, stable_url, say=say, actor=actor, clock=clock, sleep=sleep
    )
    return DeployResult(
        module, running.canary_version, None, outcome, running.stable_version, stable_url
    )


def _finish(
    host: VersionHost,
    store: ReleaseStore,
    release: Release,
    outcome: Outcome,
    stable_url: str,
    *,
    say: Callable[[str], None],
    actor: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Once every gateway has read the release's end: the canary made the module's version
    (promoted) or stopped (rolled back)."""
    module, version, stable_version = release.module, release.canary_version, release.stable_version
    sleep(DRAIN_SECONDS)
    labels = host if isinstance(host, LabelledVersionHost) else None
    if outcome.promoted and labels is not None:
        # The promotion pointed the gateways' stable version at the canary's URL; once the
        # live URL serves the version too, they go back to it, so the next deploy (which
        # moves the canary alias) reaches nobody before its own release. A failed
        # promotion leaves live on the old version: the gateways go back to it as well.
        try:
            host.promote(module, version)
        except Exception:
            _stable_at(store, release, stable_url, stable_version, actor=actor, clock=clock)
            raise
        _stable_at(store, release, stable_url, version, actor=actor, clock=clock)
        say(f"{module} is version {version} now")
    elif outcome.promoted:
        host.promote(module, version)
        say(f"{module} is version {version} now")
    else:
        host.retire(module, version)
        say(f"{module}@{version} stopped; {module} stays on {stable_version}")


def _stable_at(
    store: ReleaseStore,
    release: Release,
    url: str,
    version: str,
    *,
    actor: str,
    clock: Callable[[], float],
) -> None:
    """Make ``url`` (serving ``version``) the stable one of the finished ``release``, unless
    a later release has replaced it."""
    for _ in range(3):
        stored = store.get(release.module)
        if stored is None or stored.release_id != release.release_id:
            return
        if (stored.stable_url, stored.stable_version) == (url, version):
            return
        moved = replace(
            stored, stable_url=url, stable_version=version, updated_at=clock(), updated_by=actor
        )
        if store.put(moved, expected_revision=stored.revision) is not None:
            return
    raise ReleaseError(f"could not point {release.module}'s stable version at {url}")


def contract_check(
    identity_key_pem: str, *, transport: httpx.BaseTransport | None = None
) -> Callable[[str, str], ContractReport]:
    """The contract check, signing as the gateway does with the stack's identity key;
    ``transport`` carries its calls (in AWS one that signs them with SigV4)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(identity_key_pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the identity key is not an Ed25519 private key")
    return lambda module, url: check_contract(module, url, identity_key=key, transport=transport)
