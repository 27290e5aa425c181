"""Real builds of every Lambda artifact (``make test-build``: network to PyPI, a few minutes).

Skipped unless ``RELAY_TEST_BUILD=1`` (the make target sets it). Builds, under
``.relay/test-build/``: ``sam build`` of template.yaml and of each module's template (in
the source tree, no Docker, no AWS credentials), then ``make build`` of every function
again, and checks each artifact:

- every ELF file's machine is its function's ``Architectures`` (arm64: EM_AARCH64 = 183,
  x86_64: EM_X86_64 = 62), and every ``.pyc`` is an unchecked-hash one for its runtime;
- its handler imports from the artifact alone. An arm64 artifact's ``.so`` files do not
  load on an x86_64 host, so the artifact is built a second time for the host's
  architecture (the same sources, lock and steps; only the wheels' platform differs),
  which must hold the same files but for the platform in the names of extension
  modules; the handler is imported there, in an interpreter that sees the artifact and
  the standard library only. Where the architectures match, the artifact itself is used;
- the builds are byte-identical: the hash of every relative path, mode and content is
  the same for ``sam build`` of each template and ``make build``;
- nothing it does not need: no console scripts, pip's per-install files, type stubs,
  project tooling or templates.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cloud import ROOT
from tests.template.test_artifacts import FUNCTIONS, PROJECT_PACKAGES, _build_tool, _environment

pytestmark = pytest.mark.skipif(
    os.environ.get("RELAY_TEST_BUILD") != "1", reason="real builds: make test-build"
)

OUT = ROOT / ".relay" / "test-build"
EM = {"arm64": 183, "x86_64": 62}
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
DECLARED = _build_tool().functions() if os.environ.get("RELAY_TEST_BUILD") == "1" else {}


def _run(argv: list[str], **env: str) -> None:
    result = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])


def _sam_build(template: str, build_dir: Path) -> None:
    sam = os.environ.get("RELAY_SAM", str(ROOT / ".relay/tools/sam/bin/sam"))
    _run(
        [
            sam,
            "build",
            "--template-file",
            template,
            "--build-dir",
            str(build_dir),
            "--build-in-source",
            "--no-cached",
            "--parallel",
        ],
        SAM_CLI_TELEMETRY="0",
    )


@pytest.fixture(scope="module")
def builds() -> dict[str, dict[str, Path]]:
    """function -> {build name: artifact directory}."""
    shutil.rmtree(OUT, ignore_errors=True)
    out: dict[str, dict[str, Path]] = {name: {} for name, _, _ in FUNCTIONS}
    for template in sorted({d["template"] for d in DECLARED.values()}):
        build_dir = OUT / ("sam-" + template.replace("/", "-").removesuffix(".yaml"))
        _sam_build(template, build_dir)
        for name, declared in DECLARED.items():
            if declared["template"] == template:
                out[name][f"sam build -t {template}"] = build_dir / name
    _run(["make", "-s", "--no-print-directory", "build", f"BUILD_DIR={OUT / 'make'}"])
    for name in out:
        out[name]["make build"] = OUT / "make" / name
    return out


@pytest.fixture(scope="module")
def host_twins(builds) -> dict[str, Path]:
    """Each artifact built for this host's architecture (itself where they already agree).

    Functions whose artifacts are identical (a deploy hook and the function it smokes)
    share one twin.
    """
    twins: dict[str, Path] = {}
    by_content: dict[str, Path] = {}
    for name, _, _ in FUNCTIONS:
        if DECLARED[name]["architecture"] == HOST_ARCH:
            twins[name] = builds[name]["make build"]
            continue
        content = tree_hash(builds[name]["make build"])
        if content not in by_content:
            by_content[content] = OUT / "host" / name
            _run(
                ["make", "-s", f"build-{name}", f"ARTIFACTS_DIR={by_content[content]}"],
                LAMBDA_ARCHITECTURE_OVERRIDE=HOST_ARCH,
            )
        twins[name] = by_content[content]
    return twins


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).parts):
        mode = path.lstat().st_mode
        digest.update(f"{path.relative_to(root).as_posix()}\0{mode:o}\0".encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _elf_machine(path: Path) -> int | None:
    with path.open("rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    order = "<" if head[5] == 1 else ">"
    return int(struct.unpack(order + "H", head[18:20])[0])


IDS = [f[0] for f in FUNCTIONS]


@pytest.mark.parametrize("function", IDS)
def test_two_builds_are_byte_identical(function, builds):
    hashes = {build: tree_hash(path) for build, path in builds[function].items()}
    assert all(path.is_dir() for path in builds[function].values()), builds[function]
    assert len(set(hashes.values())) == 1, hashes


@pytest.mark.parametrize("function", IDS)
def test_every_binary_is_for_the_function_s_architecture(function, builds):
    artifact = builds[function]["make build"]
    expected = EM[DECLARED[function]["architecture"]]
    machines = {}
    for path in artifact.rglob("*"):
        if path.is_file() and (machine := _elf_machine(path)) is not None:
            machines[path.relative_to(artifact).as_posix()] = machine
    assert machines, "no extension modules at all: were the wheels installed?"
    wrong = {p: m for p, m in machines.items() if m != expected}
    assert not wrong, f"expected e_machine {expected}: {wrong}"


@pytest.mark.parametrize("function", IDS)
def test_bytecode_is_unchecked_hash_for_the_runtime(function, builds):
    artifact = builds[function]["make build"]
    tag = "cpython-" + DECLARED[function]["runtime"].removeprefix("python").replace(".", "")
    missing = []
    for source in artifact.rglob("*.py"):
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not pyc.is_file():
            missing.append(source.relative_to(artifact).as_posix())
            continue
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{pyc}: flags {flags:#b}, not unchecked-hash"
    assert not missing, missing[:20]


@pytest.mark.parametrize("function", IDS)
def test_the_artifact_holds_nothing_the_function_does_not_need(function, builds):
    artifact = builds[function]["make build"]
    tops = {p.name for p in artifact.iterdir()}
    assert not tops & {"bin", "relay", "bench", "tests", "tools", "requirements"}, tops
    junk = [
        p.relative_to(artifact).as_posix()
        for p in artifact.rglob("*")
        if p.name in {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "template.yaml"}
        or p.suffix == ".pyi"
        or p.name == "examples-1.json"
    ]
    assert not junk, junk[:20]
    modes = {oct(p.stat().st_mode & 0o777) for p in artifact.rglob("*") if p.is_file()}
    assert modes == {"0o644"}, modes


def _host_name(relative: str) -> str:
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}
    return relative.replace(machine["arm64"], machine[HOST_ARCH]).replace(
        machine["x86_64"], machine[HOST_ARCH]
    )


@pytest.mark.parametrize(("function", "handler", "variables"), FUNCTIONS, ids=IDS)
def test_the_handler_imports_inside_its_own_artifact(
    function, handler, variables, builds, host_twins
):
    artifact, twin = builds[function]["make build"], host_twins[function]
    # GIVEN the artifact built for this host holds the same files (bar the platform)
    files = {_host_name(p.relative_to(artifact).as_posix()) for p in artifact.rglob("*")}
    twin_files = {p.relative_to(twin).as_posix() for p in twin.rglob("*")}
    assert files == twin_files, (sorted(files - twin_files)[:20], sorted(twin_files - files)[:20])
    # WHEN the handler is imported with the artifact and the standard library only
    module, attribute = handler.rsplit(".", 1)
    probe = (
        "import sys\n"
        f"sys.path[:0] = [{str(twin)!r}]\n"
        "import importlib, json\n"
        f"handler = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        "assert callable(handler)\n"
        "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in list(sys.modules)"
        " if getattr(sys.modules[m], '__file__', None)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],  # no site-packages, no PYTHONPATH
        cwd=twin,
        env=_environment(variables),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # THEN everything it loaded outside the standard library came from the artifact
    stdlib = os.path.dirname(os.__file__)
    outside = {
        m: f
        for m, f in loaded.items()
        if not f.startswith((str(twin), stdlib)) or "site-packages" in f
    }
    assert not outside, outside
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & {"relay", "bench", "moto", "pytest"}
    assert {"shared_contracts", module.split(".")[0]} <= tops & set(PROJECT_PACKAGES)
