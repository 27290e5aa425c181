"""Reading every page of a DynamoDB query.

A Query answers at most 1 MB at a time and says where to go on in ``LastEvaluatedKey``;
callers that want the whole result (a driver's loads, a driver's passes) follow it here
instead of each writing the loop again.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any


def query_items(table: Any, **query: Any) -> Iterator[dict[str, Any]]:
    """Every item ``table.query(**query)`` matches, across pages, in DynamoDB's order.

    ``table`` is a boto3 ``Table`` resource. Pages are fetched as the items are consumed.
    """
    kwargs = dict(query)
    while True:
        page = table.query(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def kind_items(
    table: Any, kind: str, *, newest_first: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """The items of one ``kind`` (the hash key of the tables keyed ``kind`` + ``name``:
    the routing controls and levers with their audit trail), read consistently, in the
    range key's order or newest first, ``limit`` at the most."""
    query: dict[str, Any] = {
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": kind},
        "ConsistentRead": True,
        "ScanIndexForward": not newest_first,
    }
    if limit is not None:
        query["Limit"] = limit
    return list(islice(query_items(table, **query), limit))
