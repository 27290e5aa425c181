"""The local stack: moto server, every module as its own process, the gateway.

Everything listens on 127.0.0.1. Tables, queues, topics and keys come from template.yaml
(see :mod:`relay.cloud`); each process gets the environment its Lambda function would get,
pointing at the emulator. A module process can be stopped and started again on the same
port, as a game day does to a real module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from shared_contracts.identity import generate_key_pair

from .cloud import ROOT, LocalCloud, StackResult
from .devissuer import DevIssuer

HOST = "127.0.0.1"
# Logs, the dev token secret and the running stack's addresses (RELAY_STATE_DIR overrides).
STATE_DIR = Path(os.environ.get("RELAY_STATE_DIR", ROOT / ".relay"))
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
}
# Module function logical id -> (module name, ASGI app factory).
MODULES: dict[str, tuple[str, str]] = {
    "LoadsFunction": ("loads", "modules.loads.app:create_app"),
    "GatepassFunction": ("gatepass", "modules.gatepass.app:create_app"),
    "NavigateFunction": ("navigate", "modules.navigate.app:create_app"),
    "MessageFunction": ("message", "modules.message.app:create_app"),
}
GATEWAY_FUNCTION = "GatewayFunction"
EVENT_SOURCES = {"NotificationsFunction": "notifications", "DeferredReplayFunction": "replay"}
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def local_gateway_env(state_dir: Path, identity_private_key: str) -> dict[str, str]:
    """What differs locally: the dev issuer instead of Cognito, no SigV4, the key in env."""
    issuer = DevIssuer.load_or_create(state_dir)
    return {
        "RELAY_STAGE": "local",
        # Function URLs with AWS_IAM auth do not exist locally: no SigV4 on loopback.
        "RELAY_SIGN_UPSTREAMS": "false",
        "RELAY_TOKEN_ISSUER": issuer.issuer,
        "RELAY_TOKEN_CLIENT_IDS": issuer.client_id,
        "RELAY_JWKS_URL": "file://" + str(issuer.write_jwks(state_dir)),
        "RELAY_IDENTITY_SIGNING_KEY": identity_private_key,
        "RELAY_IDENTITY_SIGNING_KEY_SECRET_ARN": "",
    }


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    health_path: str = "/healthz"
    proc: subprocess.Popen | None = None
    ca_file: Path | None = None   # set when the process serves HTTPS

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{HOST}:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited at start-up; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-2000:])
            if self.port is None:
                return
            try:
                verify = str(self.ca_file) if self.ca_file else True
                if httpx.get(self.url + self.health_path, timeout=1.0,
                             verify=verify).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in time; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        if not self.running():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    gateway_port: int = 8000
    state_dir: Path = STATE_DIR
    seed: bool = True
    # Retry backoff of the local SQS event sources (base, max seconds); tests shorten it.
    event_source_backoff: tuple[int, int] = (1, 60)
    # Serve the gateway over HTTPS with a self-signed certificate (relay dev --tls).
    tls: bool = False
    # Extra gateway settings (RELAY_*), e.g. looser rate limits for a fuzzing run.
    gateway_overrides: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    cloud: LocalCloud | None = None
    deployed: StackResult | None = None
    emulator_url: str = ""

    def __enter__(self) -> "LocalStack":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def gateway_url(self) -> str:
        return self.processes["gateway"].url

    def module_url(self, name: str) -> str:
        return self.processes[name].url

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        logs = self.state_dir / "logs"
        base_env = {**os.environ, **LOCAL_CREDENTIALS, "PYTHONUNBUFFERED": "1"}
        base_env.pop("AWS_PROFILE", None)
        moto_port = free_port()
        self.emulator_url = f"http://{HOST}:{moto_port}"
        moto = Process("emulator", [sys.executable, "-m", "moto.server", "-H", HOST,
                                    "-p", str(moto_port)], base_env, logs / "emulator.log",
                       port=moto_port, health_path="/moto-api/")
        self.processes["emulator"] = moto
        moto.start()
        moto.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)

        ports = {lid: free_port() for lid in MODULES}
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=LOCAL_CREDENTIALS["AWS_REGION"])
        self.cloud = LocalCloud(function_urls={lid: f"http://{HOST}:{p}/" for lid, p in ports.items()},
                                endpoint_url=self.emulator_url, session=session)
        # A fresh identity key pair per run: modules get the public half from the template.
        identity_private, identity_public = generate_key_pair()
        self.deployed = self.cloud.deploy(parameters={"Stage": "local",
                                                      "IdentityPublicKey": identity_public})
        gateway_local = local_gateway_env(self.state_dir, identity_private)
        aws_env = {**base_env, "AWS_ENDPOINT_URL": self.emulator_url}

        if self.seed:
            from .seed import seed_demo_data

            seed_demo_data(self.function_env,
                           dynamodb=session.resource("dynamodb", endpoint_url=self.emulator_url),
                           sqs=session.client("sqs", endpoint_url=self.emulator_url))

        for lid, (name, factory) in MODULES.items():
            env = {**aws_env, **self.function_env(lid)}
            self.processes[name] = Process(name, _uvicorn(factory, ports[lid]), env,
                                           logs / f"{name}.log", port=ports[lid])

        # One local event source runner per SQS-triggered function (notifications, replay).
        for lid, owner in self.deployed.functions().items():
            for queue in self.deployed.sqs_event_sources(lid):
                handler = owner.template["Resources"][lid]["Properties"]["Handler"]
                name = EVENT_SOURCES.get(lid, lid)
                self.processes[name] = Process(
                    name, [sys.executable, "-m", "relay.eventsource", handler],
                    {**aws_env, **self.function_env(lid), **gateway_local,
                     "EVENT_SOURCE_QUEUE_URL": queue.ref,
                     "EVENT_SOURCE_QUEUE_ARN": queue.attrs["Arn"],
                     "EVENT_SOURCE_BACKOFF_BASE_SECONDS": str(self.event_source_backoff[0]),
                     "EVENT_SOURCE_BACKOFF_MAX_SECONDS": str(self.event_source_backoff[1])},
                    logs / f"{name}.log")

        gateway_env = {**aws_env, **self.function_env(GATEWAY_FUNCTION), **gateway_local,
                       **self.gateway_overrides}
        argv = _uvicorn("gateway.app:create_app", self.gateway_port)
        cert = None
        if self.tls:
            from .tls import self_signed_certificate

            cert, key = self_signed_certificate(self.state_dir)
            argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        self.processes["gateway"] = Process("gateway", argv, gateway_env, logs / "gateway.log",
                                            port=self.gateway_port, ca_file=cert)
        for name, proc in self.processes.items():
            if name != "emulator":
                proc.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for proc in self.processes.values():
            proc.wait_ready(deadline)
        self._write_state()

    def function_env(self, logical_id: str) -> dict[str, str]:
        assert self.cloud and self.deployed
        return self.cloud.function_env(self.deployed, logical_id)

    def output(self, app: str, name: str) -> str:
        assert self.deployed
        return self.deployed.children[app].outputs[name]

    def stop_process(self, name: str) -> None:
        self.processes[name].stop()

    def start_process(self, name: str) -> None:
        proc = self.processes[name]
        proc.start()
        proc.wait_ready(time.monotonic() + START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        state = self.state_dir / "stack.json"
        if state.exists():
            state.unlink()

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").write_text(json.dumps({
            "gateway_url": self.gateway_url,
            "emulator_url": self.emulator_url,
            "modules": {n: p.url for n, p in self.processes.items() if p.port},
            "notifications_queue_url": self.output("NotificationsApp", "NotificationsQueueUrl"),
            "notifications_dead_letter_queue_url": self.output(
                "NotificationsApp", "NotificationsDeadLetterQueueUrl"),
            "push_topic_arn": self.output("NotificationsApp", "PushTopicArn"),
        }, indent=2))


def _uvicorn(factory: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", HOST,
            "--port", str(port), "--no-access-log", "--log-level", "warning"]
