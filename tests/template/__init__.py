"""The template tier. Helpers for reading what the templates write with conditions: a
loads stack may be a cell (``Cell``), and the stacks reading loads values take the number of
cells (``LoadsCells``), so some names and lists are ``Fn::Sub`` with variables or
``Fn::If`` items (docs/deploy.md, Cells)."""

from __future__ import annotations

from typing import Any

NO_VALUE = {"Ref": "AWS::NoValue"}


def sub_text(value: Any, *, celled: bool = False) -> Any:
    """The text of ``value`` as a stack without ``Cell`` writes it (``celled``: as a cell's
    stack does, ``${Cell}`` left in): a plain string, ``{"Fn::Sub": text}``, or
    ``{"Fn::Sub": [text, variables]}`` whose variables are strings, ``Fn::Sub`` or
    ``!If [IsCell, <celled>, <uncelled>]``. Anything else is returned as it is."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        condition, if_true, if_false = value["Fn::If"]
        assert condition == "IsCell", condition
        return sub_text(if_true if celled else if_false, celled=celled)
    if not (isinstance(value, dict) and set(value) == {"Fn::Sub"}):
        return value
    arg = value["Fn::Sub"]
    if isinstance(arg, str):
        return arg
    text, variables = arg
    for name, variable in variables.items():
        text = text.replace("${" + name + "}", str(sub_text(variable, celled=celled)))
    return text


def branches(items: list[Any]) -> list[Any]:
    """A list with ``Fn::If`` items (``!If [LoadsCell<k>, a, b]``) as every value it can
    hold: each branch that is not ``AWS::NoValue``."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict) and set(item) == {"Fn::If"}:
            out += [b for b in item["Fn::If"][1:] if b != NO_VALUE]
        else:
            out.append(item)
    return out
