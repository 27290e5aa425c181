"""The gateway's AWS calls (queue, ledger, control table): every one has a deadline.

boto3 is synchronous: calls run on a small thread pool of their own, so a stalled AWS
endpoint can neither block the event loop nor take the threads other work needs, and the
caller stops waiting at its deadline whatever the thread is doing. The clients carry
socket timeouts and a bounded number of attempts as well (the same as the modules':
:mod:`module_kit.aws`), so a stalled thread frees itself soon after.

A call that outlives its deadline may still land (the request may have reached AWS before
it stalled): callers only acknowledge what they saw succeed, and every write the gateway
makes to AWS is idempotent (FIFO deduplication ids, conditional puts).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from module_kit import aws as kit_aws

AWS_CALL_WORKERS = 16

T = TypeVar("T")


class DependencyTimeout(Exception):
    """An AWS call did not answer within its deadline."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not answer within {seconds:g}s")
        self.what = what


def client(
    service: str,
    *,
    read_timeout: float = kit_aws.READ_TIMEOUT_SECONDS,
    region_name: str | None = None,
) -> Any:
    """A boto3 client with the kit's deadlines (:mod:`module_kit.aws`): every call ends
    within about two attempts of the connect and read timeouts. ``region_name``: another
    region's endpoint (a peer region's SSM), else this one's."""
    if region_name is not None:
        return kit_aws.client(service, read_timeout=read_timeout, region_name=region_name)
    return kit_aws.client(service, read_timeout=read_timeout)


class DynamoTable:
    """A DynamoDB table by name. The boto3 resource (with the kit's deadlines) is made on
    first use, never at import; tests pass their own."""

    def __init__(self, table_name: str, *, dynamodb: Any = None) -> None:
        self.table_name = table_name
        self._dynamodb = dynamodb

    @property
    def table(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = kit_aws.resource("dynamodb")
        return self._dynamodb.Table(self.table_name)


def warm() -> None:
    """Load the service models the first calls need (DynamoDB, SQS, SSM) into boto3's
    default session while the process starts, not inside a request's deadline: on a busy
    host a cold instance's first fallback-store read spent its 0.5 s making the resource.
    Best effort: without a region or credentials the clients are made on first use."""
    try:
        kit_aws.resource("dynamodb").Table("warm")
        client("sqs")
        client("ssm")
    except Exception:  # botocore's NoRegionError and the like: said on first use
        return


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(AWS_CALL_WORKERS, thread_name_prefix="relay-aws")
        return _pool


async def call(fn: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
    """``fn(*args)`` on the AWS thread pool; :class:`DependencyTimeout` after ``timeout``."""
    future = asyncio.get_running_loop().run_in_executor(_executor(), functools.partial(fn, *args))
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise DependencyTimeout(what, timeout) from None
