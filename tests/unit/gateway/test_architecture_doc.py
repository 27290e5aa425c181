"""docs/architecture.md names only code that exists, and lists the pipeline in its order."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from gateway.pipeline import step_names

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
ROW = re.compile(r"^\| ([^|]+?) \| `([\w.]+)` \|$", re.MULTILINE)


def rows(after_heading: str) -> list[tuple[str, str]]:
    """The (step, code) rows of the first table after ``after_heading``."""
    text = DOC.read_text()
    start = text.index(after_heading)
    table = text[start:].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    return ROW.findall("|" + table)


def resolve(dotted: str) -> object:
    """``a.b.C.d``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


EDGE = rows("The steps and the code that does each")
FORWARD = rows("Inside `Forward`, in order")


@pytest.mark.parametrize(("step", "code"), EDGE + FORWARD)
def test_every_code_name_in_the_pipeline_tables_exists(step, code):
    assert resolve(code) is not None


def test_the_edge_table_is_the_apps_pipeline_in_order(gateway):
    assert [step for step, _ in EDGE] == [*step_names(gateway.app.steps), "Forward"]
    # each row's code is the class that step is
    for (step, code), name in zip(EDGE, [*step_names(gateway.app.steps), "Forward"], strict=True):
        assert code.rsplit(".", 1)[1] == step == name


def test_the_drawing_names_the_same_steps_in_the_same_order():
    drawing = DOC.read_text().split("## The request pipeline", 1)[1].split("```")[1]
    names = [step for step, _ in EDGE]
    positions = [drawing.index(f"\n{name} ") for name in names]
    assert positions == sorted(positions)
    inner = " -> ".join(step for step, _ in FORWARD if step != "fallback")
    assert inner in drawing


def test_every_backticked_dotted_name_on_the_page_exists():
    text = DOC.read_text()
    for dotted in set(re.findall(r"`((?:gateway|shared_contracts|bench)\.[\w.]+)`", text)):
        assert resolve(dotted) is not None, dotted
    for name in re.findall(r"\b([A-Z][a-z]+(?:[A-Z][a-z]+)+)\b", text):
        assert any(
            hasattr(resolve(module), name)
            for module in (
                "gateway.pipeline",
                "gateway.pipeline.http",
                "gateway.app",
                "gateway.forwarding.forwarder",
                "gateway.forwarding.upstream",
                "gateway.resilience.breaker",
                "gateway.resilience.faults",
                "gateway.resilience.bulkhead",
                "shared_contracts.errors",
            )
        ), name


def test_the_forward_table_is_the_forwarding_packages_list():
    from gateway.forwarding import FORWARD_STEPS

    assert [(step, f"gateway.forwarding.{code}") for step, code in FORWARD_STEPS] == FORWARD
