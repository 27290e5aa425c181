"""Game day: storage freezes while a message is being written; the message lands once.

The game day that found it: with the emulator frozen for 25 s while messages were posted,
one acknowledged message was stored twice. The first delivery was stuck in a boto3 call
past its 10 s idempotency lease; the emulator applied the write it had received when it
resumed, after the module gave up; the replay with the same key then ran the work again.

To freeze at exactly that moment, this test runs its own message module process whose AWS
endpoint is a small proxy in front of the emulator: the proxy SIGSTOPs the emulator just
before it forwards the first write to the messages table, so the write is received by a
frozen emulator and applied when it resumes, as in the game day.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import httpx
from boto3.dynamodb.conditions import Key

from module_kit.idempotency import LOCAL_IN_PROGRESS_TIMEOUT
from module_kit.signed_context import IdentitySigner
from relay.stack import HOST, START_TIMEOUT_SECONDS, Process, free_port
from shared_contracts import headers
from shared_contracts.identity import IdentityContext, Role
from tests.integration.conftest import wait_until

DYNAMODB_WRITES = {"DynamoDB_20120810.PutItem", "DynamoDB_20120810.TransactWriteItems"}
MARGIN = timedelta(seconds=1)


class FreezingProxy(ThreadingHTTPServer):
    """Forwards AWS calls to the emulator; freezes it before the first write to ``table``."""

    daemon_threads = True

    def __init__(self, emulator_url: str, emulator_pid: int, table: str) -> None:
        super().__init__((HOST, free_port()), _Forward)
        target = urlsplit(emulator_url)
        self.emulator = (target.hostname, target.port)
        self.emulator_pid = emulator_pid
        self.table = table
        self.frozen = threading.Event()
        self.frozen_at = 0.0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def before_forward(self, target: str | None, body: bytes) -> None:
        if target not in DYNAMODB_WRITES:
            return
        request = json.loads(body)
        tables = {request.get("TableName")} | {
            op.get("TableName") for item in request.get("TransactItems", []) for op in item.values()
        }
        with self._lock:
            if self.table in tables and not self.frozen.is_set():
                os.kill(self.emulator_pid, signal.SIGSTOP)
                self.frozen_at = time.monotonic()
                self.frozen.set()

    def thaw(self) -> None:
        os.kill(self.emulator_pid, signal.SIGCONT)


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FreezingProxy

    def do_POST(self) -> None:
        self._forward()

    def do_GET(self) -> None:
        self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.before_forward(self.headers.get("X-Amz-Target"), body)
        upstream = http.client.HTTPConnection(*self.server.emulator, timeout=120)
        try:
            upstream.request(
                self.command,
                self.path,
                body,
                {k: v for k, v in self.headers.items() if k.lower() != "connection"},
            )
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        try:
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("connection", "content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the module stopped waiting long ago

    def log_message(self, *args: object) -> None:
        pass


def _message_module(stack, proxy: FreezingProxy) -> Process:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "modules.message.app:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**stack.processes["message"].env, "AWS_ENDPOINT_URL": proxy.url}
    return Process(
        "message-behind-freezing-proxy",
        argv,
        env,
        stack.state_dir / "logs" / "message-freeze.log",
        port=port,
    )


def _identity(stack) -> dict[str, str]:
    """The context the gateway signs for the message module, with the stack's gateway key."""
    signer = IdentitySigner(stack.processes["gateway"].env["RELAY_IDENTITY_SIGNING_KEY"])
    ctx = IdentityContext(sub="D-1001", role=Role.DRIVER, driver_id="D-1001")
    return {headers.IDENTITY: signer.sign(ctx, audience="message")}


def test_a_message_written_while_storage_froze_past_the_lease_is_stored_once(stack):
    messages_table = stack.function_env("MessageFunction")["MESSAGES_TABLE"]
    ddb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    text = f"Frozen at the gate {time.time_ns()}"

    def stored() -> list[dict]:
        items = ddb.Table(messages_table).query(
            KeyConditionExpression=Key("driver_id").eq("D-1001"), ConsistentRead=True
        )["Items"]
        return [d for d in (json.loads(i["doc"]) for i in items) if d["body"] == text]

    proxy = FreezingProxy(stack.emulator_url, stack.processes["emulator"].proc.pid, messages_table)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    module = _message_module(stack, proxy)
    module.start()
    accepted_at = datetime.now(UTC).replace(microsecond=0)
    delivery = {
        headers.IDEMPOTENCY_KEY: "freeze-msg-0001",
        headers.ACCEPTED_AT: accepted_at.isoformat().replace("+00:00", "Z"),
    }
    try:
        module.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)
        # GIVEN a keyed message in flight to the module when storage freezes during its write
        first: dict = {}

        def deliver_first() -> None:
            first["answer"] = httpx.post(
                module.url + "/message",
                json={"body": text},
                headers={**_identity(stack), **delivery},
                timeout=60,
            )
            first["ended"] = time.monotonic()

        sender = threading.Thread(target=deliver_first)
        sender.start()
        assert proxy.frozen.wait(timeout=20), "the module never wrote the message"
        # THEN the module gives up within its lease (explicit boto3 deadlines), with a 5xx
        sender.join(timeout=LOCAL_IN_PROGRESS_TIMEOUT.total_seconds() + 20)
        assert "answer" in first, "the first delivery never ended"
        assert first["answer"].status_code >= 500, first["answer"].text
        assert first["ended"] - proxy.frozen_at < LOCAL_IN_PROGRESS_TIMEOUT.total_seconds()
        # WHEN the freeze outlasts the lease the first delivery took just before freezing
        # (real processes keep real time: nothing to inject, so this waits it out) ...
        time.sleep(
            max(
                0.0,
                proxy.frozen_at
                + (LOCAL_IN_PROGRESS_TIMEOUT + MARGIN).total_seconds()
                - time.monotonic(),
            )
        )
    finally:
        # ... and storage resumes
        if proxy.frozen.is_set():
            proxy.thaw()
    try:
        # THEN the write it received while frozen is applied after all
        assert wait_until(lambda: len(stored()) == 1, timeout=20)
        # WHEN the gateway delivers the message again with the same key
        again: dict = {}

        def delivered() -> bool:
            again["answer"] = httpx.post(
                module.url + "/message",
                json={"body": text},
                headers={**_identity(stack), **delivery},
                timeout=10,
            )
            return again["answer"].status_code == 201

        assert wait_until(delivered, timeout=30, interval=1.0), again["answer"].text
        # THEN it is answered with the stored message, which exists exactly once, stamped
        # with the time the gateway accepted it
        [message] = stored()
        assert again["answer"].json() == message
        assert message["sent_at"] == delivery[headers.ACCEPTED_AT]
    finally:
        module.stop()
        proxy.shutdown()
        proxy.server_close()
