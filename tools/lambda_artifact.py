"""Build one Lambda function's artifact (``make build-<LogicalId>``; ``sam build`` runs it).

    python tools/lambda_artifact.py FUNCTION --requirements requirements/lambda-SET.lock
        --out ARTIFACTS_DIR [--pip 'python -m pip'] SOURCE...

The artifact is the function's SOURCEs (project packages or files, copied without caches)
plus the wheels pinned in its requirement set, for the architecture and runtime the
function's template declares (``Architectures``, ``Runtime``, or the template's
``Globals``): arm64 takes ``manylinux*_aarch64`` wheels, x86_64 ``manylinux*_x86_64``,
never the build host's. ``--pip true`` skips the wheels (the offline template tests).

Byte-identical across builds of one commit: every ``.py`` is compiled to an
unchecked-hash ``.pyc`` (no timestamp in it; the interpreter loads it without looking at
the source, which on Lambda's read-only ``/var/task`` is the only bytecode that helps a
cold start), with a fixed hash seed and ``/var/task`` as the recorded path; pip's
per-install files (``RECORD``, ``INSTALLER``, ``REQUESTED``, ``direct_url.json``),
console scripts, type stubs and botocore's documentation examples are dropped; files
are written in sorted order with modes 0644 (0755 for directories) and one fixed mtime.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Lambda's CPU architectures and the wheel platform suffix of each.
MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}
# The glibc of each runtime's OS (python3.11: Amazon Linux 2, glibc 2.26; later runtimes:
# Amazon Linux 2023, glibc 2.34): a manylinux wheel newer than that would not load.
GLIBC_MINOR = {"python3.11": 26, "python3.12": 34, "python3.13": 34}
MTIME = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold
DROPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
LAMBDA_TASK_ROOT = "/var/task"


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_TemplateLoader.add_multi_constructor("!", _any_tag)


def templates() -> list[Path]:
    return [
        ROOT / "template.yaml",
        *sorted(ROOT.glob("*/template.yaml")),
        *sorted(ROOT.glob("modules/*/template.yaml")),
    ]


def functions() -> dict[str, dict[str, str]]:
    """Every SAM function of every template: logical id -> architecture, runtime, template."""
    out: dict[str, dict[str, str]] = {}
    for template in templates():
        data = yaml.load(template.read_text(), Loader=_TemplateLoader)  # noqa: S506 (SafeLoader)
        common = (data.get("Globals") or {}).get("Function") or {}
        for name, resource in (data.get("Resources") or {}).items():
            if resource.get("Type") != "AWS::Serverless::Function":
                continue
            props = resource.get("Properties") or {}
            architectures = props.get("Architectures", common.get("Architectures", ["x86_64"]))
            if len(architectures) != 1 or name in out:
                raise SystemExit(f"{name}: one architecture, one template per function")
            out[name] = {
                "architecture": architectures[0],
                "runtime": str(props.get("Runtime", common.get("Runtime"))),
                "template": str(template.relative_to(ROOT)),
            }
    return out


def platforms(architecture: str, runtime: str) -> list[str]:
    """pip's ``--platform`` tags for a function: every manylinux its runtime's glibc loads."""
    machine = MACHINES[architecture]
    newest = GLIBC_MINOR[runtime]
    return [f"manylinux2014_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, newest + 1)
    ]


def _install(pip: list[str], requirements: Path, target: Path, arch: str, runtime: str) -> None:
    version = runtime.removeprefix("python")
    command = [
        *pip,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",  # the lock names every package, each with its hashes
        "--require-hashes",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        version,
        *[arg for tag in platforms(arch, runtime) for arg in ("--platform", tag)],
        "--no-compile",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]
    subprocess.run(command, check=True)  # noqa: S603 (argv list)


def _copy_sources(sources: list[str], stage: Path) -> None:
    for source in sources:
        path = ROOT / source
        if path.is_file():
            (stage / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, stage / source)
            continue
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(ROOT)
            if not file.is_file() or "__pycache__" in relative.parts:
                continue
            # a module's template is for SAM, not the function
            if file.suffix in {".pyc", ".pyo"} or file.name == "template.yaml":
                continue
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, stage / relative)


def _prune(stage: Path) -> None:
    """What pip leaves that the function never reads, or that differs between installs."""
    shutil.rmtree(stage / "bin", ignore_errors=True)  # console scripts
    for path in sorted(stage.rglob("*"), reverse=True):
        if path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path)
        elif (
            path.suffix == ".pyi"  # type stubs are for type checkers
            or (path.parent.name.endswith(".dist-info") and path.name in DROPPED_DIST_INFO)
            # botocore's request examples, read only to write its documentation
            or (path.name == "examples-1.json" and path.parts[-4:-3] == ("data",))
        ):
            path.unlink()


def _compile(stage: Path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # set constants are ordered by hash
    subprocess.run(  # noqa: S603 (argv list)
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage),
            "-p",
            LAMBDA_TASK_ROOT,
            str(stage),
        ],
        check=True,
        env=env,
    )


def _clear(out: Path) -> None:
    resolved = out.resolve()
    if resolved in {ROOT, *ROOT.parents} or resolved == Path.home():
        raise SystemExit(f"refusing to empty {out}: not an artifacts directory")
    if resolved.is_dir():
        for child in resolved.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    resolved.mkdir(parents=True, exist_ok=True)


def _assemble(stage: Path, out: Path) -> tuple[int, int]:
    """Write the staged tree into ``out`` in sorted order, with fixed modes and mtimes."""
    _clear(out)
    files = size = 0
    paths = sorted(stage.rglob("*"), key=lambda p: p.relative_to(stage).parts)
    for path in paths:
        target = out / path.relative_to(stage)
        if path.is_dir():
            target.mkdir()
            target.chmod(0o755)
        else:
            data = path.read_bytes()
            target.write_bytes(data)
            target.chmod(0o644)
            files += 1
            size += len(data)
    for path in [*reversed(paths), stage]:
        target = out / path.relative_to(stage)
        os.utime(target, (MTIME, MTIME))
    return files, size


def build(function: str, requirements: Path, sources: list[str], out: Path, pip: str) -> None:
    declared = functions()
    if function not in declared:
        raise SystemExit(f"{function}: no such function in {[str(t) for t in templates()]}")
    arch, runtime = declared[function]["architecture"], declared[function]["runtime"]
    # The build tests' twin of an arm64 artifact, built for the host to import it there.
    arch = os.environ.get("LAMBDA_ARCHITECTURE_OVERRIDE") or arch
    wheels = pip.strip() != "true"
    version = runtime.removeprefix("python")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wheels and here != version:
        raise SystemExit(
            f"{function} runs {runtime}: build it with Python {version} (its bytecode is "
            f"version-specific), not {here}"
        )
    with tempfile.TemporaryDirectory(prefix="lambda-artifact-") as tmp:
        stage = Path(tmp) / "artifact"
        stage.mkdir()
        if wheels:
            _install(shlex.split(pip), requirements, stage, arch, runtime)
        _prune(stage)
        _copy_sources(sources, stage)
        _compile(stage)
        files, size = _assemble(stage, out)
    print(f"{function}: {runtime} {arch}, {files} files, {size / 1e6:.1f} MB -> {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("function", help="the function's logical id in its template")
    parser.add_argument("sources", nargs="+", help="project paths the function imports")
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="sam build's ARTIFACTS_DIR")
    parser.add_argument("--pip", default=f"{shlex.quote(sys.executable)} -m pip")
    args = parser.parse_args(argv)
    build(args.function, args.requirements, args.sources, args.out, args.pip)


if __name__ == "__main__":
    main()
