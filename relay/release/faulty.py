"""Versions of a module with a fault built in, for rehearsing a release that must fail (game
days, tests, the benchmark): a copy of the source tree whose module wraps its
``create_app`` with a middleware that fails or slows the calls the gateway makes.

Only the gateway's calls meet the fault (they carry its deadline header,
``x-relay-deadline-ms``; the contract check's smoke calls do not): a bug that shows under
production traffic only, which is what the canary analysis is there to catch.

    tree = faulty_version(tmp / "fails-30", "loads", fails(0.3))
    relay deploy loads --ref <tree>
"""

from __future__ import annotations

import shutil
from pathlib import Path

from relay.cloud import ROOT

# What a module's process imports: a version's copy holds all of it.
SOURCE_TREES = ("modules", "module_kit", "shared_contracts")

_WRAPPER = """

_create_app = create_app


def create_app(*args, **kwargs):  # type: ignore[no-redef]
    import asyncio
    import random

    from fastapi.responses import JSONResponse

    app = _create_app(*args, **kwargs)

    @app.middleware("http")
    async def fault(request, call_next):
        if "x-relay-deadline-ms" in request.headers:
            {fault}
        return await call_next(request)

    return app
"""


def fails(rate: float) -> str:
    """A 500 on ``rate`` of the gateway's calls (1.0: every one)."""
    return (
        f"if random.random() < {rate!r}:\n"
        "                return JSONResponse({'title': 'broken'}, status_code=500)"
    )


def slower(seconds: float) -> str:
    """Every gateway call ``seconds`` later."""
    return f"await asyncio.sleep({seconds!r})"


def source_copy(dest: Path, label: str = "") -> Path:
    """A copy of this tree's module sources at ``dest`` (a new version as it is, with
    ``label`` in a comment of every module's app so that its version label differs)."""
    for part in SOURCE_TREES:
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    if label:
        for app in (dest / "modules").glob("*/app.py"):
            app.write_text(app.read_text() + f"\n# version {label}\n")
    return dest


def faulty_version(dest: Path, module: str, fault: str) -> Path:
    """A copy of the sources at ``dest`` whose ``module`` has ``fault`` (:func:`fails`,
    :func:`slower`) on every call the gateway makes."""
    source_copy(dest, dest.name)
    app = dest / "modules" / module / "app.py"
    app.write_text(app.read_text() + _WRAPPER.replace("{fault}", fault))
    return dest
