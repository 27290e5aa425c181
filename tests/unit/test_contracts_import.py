"""``shared_contracts`` is cheap to import: pydantic and the standard library, nothing else.

Clients, tests and every process import the contracts; the runtime (FastAPI glue,
Powertools idempotency, identity signing, boto3) lives in ``module_kit``. Each probe runs
in a fresh interpreter, so nothing imported by the test session hides a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the contracts may load besides the standard library: pydantic and its own deps.
ALLOWED = {
    "shared_contracts",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
}
RUNTIME = {
    "fastapi",
    "starlette",
    "boto3",
    "botocore",
    "aws_lambda_powertools",
    "cryptography",
    "jwt",
    "httpx",
    "module_kit",
}


def _loaded_after(code: str) -> set[str]:
    """Top-level packages outside the standard library that ``code`` loads, in a fresh
    process (what the interpreter's start-up loaded, e.g. site hooks, is left out)."""
    probe = (
        "import sys\n"
        "before = {m.split('.')[0] for m in list(sys.modules)}\n"
        f"{code}\n"
        "import json\n"
        "top = {m.split('.')[0] for m in list(sys.modules)} - before\n"
        "stdlib = set(sys.stdlib_module_names)\n"
        # sysconfig's generated data module is the standard library's, under another name
        "print(json.dumps(sorted(t for t in top if t not in stdlib and "
        "not t.startswith('_sysconfigdata_'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


EVERY_CONTRACT = (
    "import importlib, pkgutil, shared_contracts\n"
    "names = [m.name for m in pkgutil.iter_modules(shared_contracts.__path__)]\n"
    "assert {'loads', 'gatepass', 'identity', 'errors', 'degraded', 'headers'} <= set(names)\n"
    "for name in names:\n"
    "    importlib.import_module('shared_contracts.' + name)\n"
)


def test_every_contract_module_imports_only_pydantic_and_the_standard_library():
    # GIVEN a fresh interpreter WHEN every shared_contracts module is imported
    loaded = _loaded_after(EVERY_CONTRACT)
    # THEN no runtime library came with them, and nothing but pydantic's own family
    assert not loaded & RUNTIME, sorted(loaded & RUNTIME)
    assert loaded <= ALLOWED, sorted(loaded - ALLOWED)


def test_the_probe_sees_a_runtime_import():
    # The probe itself works: a module_kit import shows up (fastapi, jwt, cryptography).
    loaded = _loaded_after("import module_kit.http")
    assert {"module_kit", "fastapi", "starlette", "jwt", "cryptography"} <= loaded


def test_module_kit_loads_each_capability_only_when_used():
    # GIVEN the package alone, THEN nothing heavy is loaded
    assert not _loaded_after("import module_kit") & (RUNTIME - {"module_kit"})
    # WHEN the gateway's parts (HTTP glue, identity signing) are imported, THEN neither
    # Powertools nor boto3 comes with them: the gateway's cold start does not pay for them
    loaded = _loaded_after("import module_kit.http, module_kit.signed_context")
    assert not loaded & {"aws_lambda_powertools", "boto3", "botocore"}
    # and a name from the curated __all__ resolves to its capability's object
    probe = (
        "import module_kit, module_kit.idempotency as i\n"
        "assert module_kit.IdempotencyStore is i.IdempotencyStore\n"
        "assert sorted(module_kit.__all__) == sorted(module_kit._EXPORTS)\n"
    )
    assert "aws_lambda_powertools" in _loaded_after(probe)
