"""The locks (requirements/*.lock, ``make lock``): the tests run exactly what ships.

``requirements/dev.lock`` is what ``.venv`` installs; ``requirements/lambda.lock`` is the
runtime part of it, pyproject.toml's dependencies, and each function's requirement set
(``requirements/lambda-<set>.lock``) is a part of that, with the same versions and hashes.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from relay.cloud import ROOT

REQUIREMENTS = ROOT / "requirements"
SETS = sorted(
    p.name.removeprefix("lambda-").removesuffix(".in") for p in REQUIREMENTS.glob("lambda-*.in")
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# Lambda's Linux on each architecture; pip evaluates a lock's markers on the build host,
# so a marker must not tell the two apart.
_LINUX = {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux"}
_HOSTS = [
    {
        **_LINUX,
        "platform_machine": "x86_64",
        "python_version": "3.11",
        "python_full_version": "3.11.9",
    },
    {
        **_LINUX,
        "platform_machine": "aarch64",
        "python_version": "3.11",
        "python_full_version": "3.11.9",
    },
]


def _lock(path: Path) -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    """name -> (version, marker, hashes) of every pin in a uv/pip-tools lock with hashes."""
    pins: dict[str, tuple[str, str | None, tuple[str, ...]]] = {}
    current = None
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            name, version, marker = match.groups()
            current = canonicalize_name(name)
            pins[current] = (version, marker, ())
        elif line.strip().startswith("--hash=") and current:
            version, marker, hashes = pins[current]
            pins[current] = (
                version,
                marker,
                (*hashes, line.strip().split("=", 1)[1].rstrip(" \\")),
            )
    assert pins, path
    return pins


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


def _runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def test_every_pin_has_hashes():
    for path in sorted(REQUIREMENTS.glob("*.lock")):
        for name, (_, _, hashes) in _lock(path).items():
            assert hashes, f"{path.name}: {name} has no --hash"


def test_the_runtime_lock_pins_pyproject_s_dependencies_within_their_ranges():
    runtime = _lock(REQUIREMENTS / "lambda.lock")
    for requirement in _runtime_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in runtime, f"{name} is in pyproject.toml but not in lambda.lock: make lock"
        assert requirement.specifier.contains(runtime[name][0], prereleases=True), (
            f"lambda.lock pins {name}=={runtime[name][0]}, outside pyproject's "
            f"{requirement.specifier}: make lock"
        )


def test_the_tests_run_the_versions_that_ship():
    # every runtime pin is the dev lock's, and installed in this venv at that version
    runtime = _lock(REQUIREMENTS / "lambda.lock")
    dev = _lock(REQUIREMENTS / "dev.lock")
    wrong = {}
    for name, (version, marker, hashes) in runtime.items():
        assert dev.get(name, (None,))[0] == version, f"{name}: dev.lock and lambda.lock differ"
        assert set(hashes) <= set(dev[name][2]), name
        if not _applies(marker):
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed (re-run make to re-install the venv): {wrong}"


@pytest.mark.parametrize("name", SETS)
def test_each_function_s_requirement_set_is_part_of_the_runtime_lock(name):
    runtime = _lock(REQUIREMENTS / "lambda.lock")
    part = _lock(REQUIREMENTS / f"lambda-{name}.lock")
    for package, pin in part.items():
        assert package in runtime, f"lambda-{name}.lock: {package} is not in lambda.lock"
        assert pin[0] == runtime[package][0], f"lambda-{name}.lock: {package} {pin[0]}"
        assert set(pin[2]) == set(runtime[package][2]), f"lambda-{name}.lock: {package} hashes"
    # the set names only pyproject.toml's dependencies (the ranges live there)
    names = {canonicalize_name(r.name) for r in _runtime_dependencies()}
    wanted = [
        canonicalize_name(line.strip())
        for line in (REQUIREMENTS / f"lambda-{name}.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(wanted) <= names, set(wanted) - names
    assert set(wanted) <= set(part), f"lambda-{name}.lock is stale: make lock"


def test_the_makefile_installs_the_venv_from_the_dev_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -r requirements/dev.lock" in makefile
    assert "pip install -q --no-deps -e ." in makefile
    stamp = next(line for line in makefile.splitlines() if line.startswith("STAMP "))
    assert "requirements/dev.lock" in stamp and "pyproject.toml" in stamp


@pytest.mark.parametrize("lock", ["lambda.lock", *[f"lambda-{s}.lock" for s in SETS]])
def test_runtime_markers_read_the_same_on_both_architectures(lock):
    for name, (_, marker, _) in _lock(REQUIREMENTS / lock).items():
        if marker:
            results = {Marker(marker).evaluate(host) for host in _HOSTS}
            assert len(results) == 1, f"{lock}: {name} ; {marker} differs between x86_64 and arm64"
