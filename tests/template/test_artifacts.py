"""Every Lambda artifact (``sam build``'s Makefile targets) holds what its handler imports.

Each function's ``build-<Function>`` target is run (runtime requirements skipped with
``LAMBDA_PIP=true``: they come from the test environment; the real build with its wheels
is ``make test-build``, tests/template/test_build.py), then its handler is imported
in a fresh interpreter whose first path entry is the artifact, with the function's
environment variables set. Every project package the handler loads must come from the
artifact: a package missing from it would otherwise be found in the repository. A module
function's artifact holds that one module (modules never import each other) and no
developer tooling.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.cloud import ROOT, ROOT_TEMPLATE, load_template

PROJECT_PACKAGES = ("gateway", "modules", "module_kit", "shared_contracts", "relay", "bench")


def _functions() -> list[tuple[str, str, list[str]]]:
    """(logical id, handler, environment variable names) of every Makefile-built function."""
    out = []
    for template in [ROOT_TEMPLATE, *sorted(Path(ROOT, "modules").glob("*/template.yaml"))]:
        data = load_template(template)
        common = data.get("Globals", {}).get("Function", {}).get("Environment", {})
        for name, resource in data["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            assert resource.get("Metadata", {}).get("BuildMethod") == "makefile", name
            props = resource["Properties"]
            names = {
                *common.get("Variables", {}),
                *props.get("Environment", {}).get("Variables", {}),
            }
            out.append((name, props["Handler"], sorted(names)))
    return out


FUNCTIONS = _functions()


def _public_key_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _environment(names: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(dict.fromkeys(names, "placeholder"))
    env.update(
        {
            "RELAY_STAGE": "test",
            "RELAY_IDENTITY_PUBLIC_KEY": _public_key_pem(),
            "GATEPASS_RETIRED_KEY_IDS": "",
            "RELAY_SIGN_UPSTREAMS": "false",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    for name in names:
        if name.startswith("RELAY_UPSTREAM_"):
            env[name] = "http://127.0.0.1:9"
    return env


def test_every_function_has_a_build_target():
    makefile = (ROOT / "Makefile").read_text()
    assert {name for name, _, _ in FUNCTIONS} >= {"LoadsFunction", "GatewayFunction"}
    for name, _, _ in FUNCTIONS:
        assert f"\nbuild-{name}:" in makefile, name
    # and `make build` builds them all
    listed = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "print-functions"],
        input="print-functions:\n\t@echo $(LAMBDA_FUNCTIONS)\n",
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(listed) == sorted(name for name, _, _ in FUNCTIONS)


def test_the_build_takes_each_function_s_architecture_and_runtime_from_its_template():
    # tools/lambda_artifact.py picks the wheels' platform from what it reads here
    declared = _build_tool().functions()
    for template in [ROOT_TEMPLATE, *sorted(Path(ROOT, "modules").glob("*/template.yaml"))]:
        data = load_template(template)
        common = data.get("Globals", {}).get("Function", {})
        for name, resource in data["Resources"].items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = resource["Properties"]
            architectures = props.get("Architectures", common.get("Architectures", ["x86_64"]))
            assert declared[name]["architecture"] == architectures[0], name
            assert declared[name]["runtime"] == props.get("Runtime", common.get("Runtime"))
            assert _build_tool().platforms("arm64", "python3.11")[0] == "manylinux2014_aarch64"
            tags = _build_tool().platforms(architectures[0], declared[name]["runtime"])
            machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architectures[0]]
            assert all(tag.endswith(f"_{machine}") for tag in tags), (name, tags)


def _build_tool():
    spec = importlib.util.spec_from_file_location(
        "lambda_artifact", ROOT / "tools" / "lambda_artifact.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("function", "handler", "variables"), FUNCTIONS, ids=[f[0] for f in FUNCTIONS]
)
def test_the_handler_imports_from_its_artifact_alone(function, handler, variables, tmp_path):
    # GIVEN the function's artifact as sam build makes it
    artifact = tmp_path / "artifact"
    subprocess.run(
        [
            "make",
            "-s",
            f"build-{function}",
            f"ARTIFACTS_DIR={artifact}",
            "LAMBDA_PIP=true",  # the test venv's packages stand in for the wheels
            f"BUILD_PYTHON={sys.executable}",
            "BUILD_TOOLS=",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    # WHEN its handler is imported with the artifact first on the path
    module, attribute = handler.rsplit(".", 1)
    probe = (
        "import importlib, json, sys\n"
        f"handler = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        "assert callable(handler)\n"
        f"project = {PROJECT_PACKAGES!r}\n"
        "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in list(sys.modules)"
        " if m.split('.')[0] in project}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=artifact,
        env=_environment(variables),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # THEN every project package it loaded is the artifact's copy
    outside = {m: f for m, f in loaded.items() if f and not f.startswith(str(artifact))}
    assert not outside, outside
    tops = {m.split(".")[0] for m in loaded}
    assert "shared_contracts" in tops
    assert not tops & {"relay", "bench"}
    if module.startswith("modules."):
        # one module per artifact, built on the kit
        own = module.split(".")[1]
        others = {m.split(".")[1] for m in loaded if m.startswith("modules.")} - {own}
        assert not others, others
        packages = {p.name for p in (artifact / "modules").iterdir() if p.is_dir()}
        assert packages - {"__pycache__"} == {own}
    assert (artifact / "module_kit" / "__init__.py").is_file()
