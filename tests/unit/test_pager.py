"""module_kit.pager: every page of a DynamoDB query, fetched as it is consumed."""

from __future__ import annotations

from typing import Any

from module_kit.pager import query_items


class PagedTable:
    """A stand-in for a boto3 Table whose query answers ``pages`` one at a time."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        index = kwargs.get("ExclusiveStartKey", {}).get("page", 0)
        page: dict[str, Any] = {"Items": self.pages[index]}
        if index + 1 < len(self.pages):
            page["LastEvaluatedKey"] = {"page": index + 1}
        return page


def test_every_page_is_read_in_order_with_the_query_kept():
    # GIVEN a query whose answer spans three pages (one of them empty, as DynamoDB may send)
    table = PagedTable([[{"n": 1}, {"n": 2}], [], [{"n": 3}]])
    # WHEN all its items are read
    items = list(query_items(table, IndexName="by_driver", KeyConditionExpression="k"))
    # THEN every item comes back in order, and each page asked the same query from where
    # the previous one stopped
    assert [i["n"] for i in items] == [1, 2, 3]
    assert [c.get("ExclusiveStartKey") for c in table.calls] == [None, {"page": 1}, {"page": 2}]
    assert all(c["IndexName"] == "by_driver" for c in table.calls)


def test_pages_are_fetched_only_as_items_are_consumed():
    table = PagedTable([[{"n": 1}], [{"n": 2}]])
    items = query_items(table, KeyConditionExpression="k")
    assert table.calls == []
    assert next(items) == {"n": 1}
    assert len(table.calls) == 1
