"""What Optic's rules leave out: a field's constraints changed against its readers.

A constraint is read on one side only, and only one direction of change breaks that side:

- **request** (parameters and bodies: old apps write them, the module validates): made
  stricter, it refuses what an old app sends. A lower ``maxLength``, ``maximum``,
  ``maxItems``; a higher ``minLength``, ``minimum``, ``minItems``; a ``pattern``,
  ``format`` or ``multipleOf`` added or changed.
- **answer** (responses and events: the module writes them, readers built from the
  contract validate them with the constraints they were built with): made looser, it
  sends what a reader refuses. The same keywords, the other way: a higher ``maxLength``, a
  lower ``minimum``, a ``pattern`` removed or changed.

Whether one pattern or format admits another's values is not decided: any change to
either is a change both ways. Each field is compared where both documents have it
(Optic judges removed and added fields), through ``$ref`` and into ``properties``,
``items``, ``additionalProperties`` and the alternatives of ``anyOf``, ``oneOf`` and
``allOf`` (by position, where both have as many). Each finding is a :class:`Finding`
whose pointer is the field's path through its operation, as Optic's are, so it is
reported, and its consumers found, as Optic's findings are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .optic import METHODS, Finding

# Upper bounds: lowering one (or adding it) is stricter. Lower bounds the other way.
UPPER = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
LOWER = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
# Neither stricter nor looser can be told: added is stricter, removed looser, changed both.
EXACT = ("pattern", "format", "multipleOf")
REQUEST, ANSWER = "request", "response"
RULES = {
    REQUEST: "prevent narrowing request constraints",
    ANSWER: "prevent widening response constraints",
}
WHY = {
    REQUEST: "what older clients send may be refused",
    ANSWER: "readers built on the released contract may refuse the answer",
}
ALTERNATIVES = ("anyOf", "oneOf", "allOf")


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[Finding]:
    """The constraints changed from ``before`` to ``after`` against their readers."""
    return list(_Walk(before, after).operations())


def _stricter(key: str, old: Any, new: Any) -> bool:
    """Does ``new`` (None: absent) admit less than ``old`` for ``key``?"""
    if key in EXACT:
        return new is not None and new != old
    if new is None:
        return False
    if old is None:
        return True
    return bool(new < old) if key in UPPER else bool(new > old)


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _phrase(key: str, old: Any, new: Any) -> str:
    if old is None:
        return f"{key} {new!r} added"
    if new is None:
        return f"{key} {old!r} removed"
    return f"{key} changed from {old!r} to {new!r}"


class _Walk:
    def __init__(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.documents = (before, after)

    def operations(self) -> Iterator[Finding]:
        before, after = self.documents
        for path, item in before.get("paths", {}).items():
            after_item = after.get("paths", {}).get(path)
            if not isinstance(item, dict) or not isinstance(after_item, dict):
                continue
            for method, operation in item.items():
                after_operation = after_item.get(method)
                if method not in METHODS or not isinstance(after_operation, dict):
                    continue
                yield from self._operation(["paths", path, method], operation, after_operation)

    def _operation(
        self, at: list[str], operation: dict[str, Any], after: dict[str, Any]
    ) -> Iterator[Finding]:
        named = {
            (p.get("in"), p.get("name")): (str(i), p)
            for i, p in enumerate(after.get("parameters", []))
        }
        for parameter in operation.get("parameters", []):
            match = named.get((parameter.get("in"), parameter.get("name")))
            if match is not None:
                index, now = match
                where = [*at, "parameters", index, "schema"]
                yield from self._schema(where, parameter.get("schema"), now.get("schema"), REQUEST)
        bodies = (operation.get("requestBody", {}), after.get("requestBody", {}))
        yield from self._contents([*at, "requestBody"], *bodies, REQUEST)
        answers = after.get("responses", {})
        for status, response in operation.get("responses", {}).items():
            if status in answers:
                where = [*at, "responses", status]
                yield from self._contents(where, response, answers[status], ANSWER)

    def _contents(
        self, at: list[str], old: dict[str, Any], new: dict[str, Any], side: str
    ) -> Iterator[Finding]:
        now = new.get("content", {}) if isinstance(new, dict) else {}
        for media, content in (old.get("content", {}) if isinstance(old, dict) else {}).items():
            if media in now:
                where = [*at, "content", media, "schema"]
                yield from self._schema(
                    where, content.get("schema"), now[media].get("schema"), side
                )

    def _resolve(self, schema: Any, which: int) -> Any:
        seen = set()
        while isinstance(schema, dict) and "$ref" in schema and schema["$ref"] not in seen:
            ref = schema["$ref"]
            seen.add(ref)
            if not ref.startswith("#/components/schemas/"):
                return None
            components = self.documents[which].get("components", {}).get("schemas", {})
            schema = components.get(ref.rsplit("/", 1)[-1])
        return schema

    def _schema(
        self,
        at: list[str],
        old: Any,
        new: Any,
        side: str,
        visiting: frozenset[tuple[int, int]] = frozenset(),
    ) -> Iterator[Finding]:
        old, new = self._resolve(old, 0), self._resolve(new, 1)
        if not isinstance(old, dict) or not isinstance(new, dict) or (id(old), id(new)) in visiting:
            return
        visiting = visiting | {(id(old), id(new))}
        for key in (*UPPER, *LOWER, *EXACT):
            was, now = old.get(key), new.get(key)
            # a request refuses more: stricter; an answer sends more: stricter the other way
            if _stricter(key, was, now) if side == REQUEST else _stricter(key, now, was):
                yield Finding(
                    pointer=_pointer(at),
                    rule=RULES[side],
                    message=f"{_phrase(key, was, now)}: {WHY[side]}",
                    spec="after",
                )
        now_properties = new.get("properties", {})
        for name, schema in old.get("properties", {}).items():
            if name in now_properties:
                where = [*at, "properties", name]
                yield from self._schema(where, schema, now_properties[name], side, visiting)
        for key in ("items", "additionalProperties"):
            yield from self._schema([*at, key], old.get(key), new.get(key), side, visiting)
        for key in ALTERNATIVES:
            was, now = old.get(key), new.get(key)
            if isinstance(was, list) and isinstance(now, list) and len(was) == len(now):
                for i, (a, b) in enumerate(zip(was, now, strict=True)):
                    yield from self._schema([*at, key, str(i)], a, b, side, visiting)
