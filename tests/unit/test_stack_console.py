"""The local stack's console process (relay dev): what it runs, against which gateway, with
which token, without starting anything."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from relay.console.server import ENV_CA_FILE, ENV_GATEWAY_URL, ENV_LOG_DIR, ENV_TOKEN
from relay.stack import CONSOLE_NAME, LocalStack, Process


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def planned(tmp_path: Path, *, ca_file: Path | None = None) -> LocalStack:
    stack = LocalStack(gateway_port=18000, state_dir=tmp_path, console=True)
    stack.processes["gateway"] = Process(
        "gateway", ["true"], {}, tmp_path / "gateway.log", port=18000, ca_file=ca_file
    )
    stack._plan_console()
    return stack


def test_the_console_watches_the_gateway_clients_reach_with_an_ops_token_of_the_run(
    tmp_path: Path,
):
    stack = planned(tmp_path)
    console = stack.processes[CONSOLE_NAME]
    assert console.argv[1:5] == ["-m", "relay.console", "--host", "127.0.0.1"]
    assert stack.console_url == f"http://127.0.0.1:{console.port}/"
    assert console.env[ENV_GATEWAY_URL] == "http://127.0.0.1:18000"
    assert console.env[ENV_LOG_DIR] == str(tmp_path / "logs")
    assert ENV_CA_FILE not in console.env
    # the token relay dev prints, the one the console polls with: an ops token
    assert console.env[ENV_TOKEN] == stack.ops_token
    assert claims(stack.ops_token)["cognito:groups"] == ["ops"]


def test_a_console_of_a_tls_gateway_trusts_its_certificate(tmp_path: Path):
    stack = planned(tmp_path, ca_file=tmp_path / "cert.pem")
    console = stack.processes[CONSOLE_NAME]
    assert console.env[ENV_GATEWAY_URL] == "https://127.0.0.1:18000"
    assert console.env[ENV_CA_FILE] == str(tmp_path / "cert.pem")


def test_a_stack_without_the_console_has_no_console_url():
    assert LocalStack().console_url is None
