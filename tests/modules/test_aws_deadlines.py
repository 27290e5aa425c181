"""Every module's AWS calls have deadlines that end a stalled delivery inside its lease.

The lease is Powertools' INPROGRESS record: 10 s locally (LOCAL_IN_PROGRESS_TIMEOUT), the
invocation's remaining time under Lambda (the functions' Timeout). boto3's defaults (60 s
reads, several attempts) let one frozen call outlive it; see module_kit/aws.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from module_kit import aws
from module_kit.idempotency import ACCEPTED_AT_MAX_AGE, LOCAL_IN_PROGRESS_TIMEOUT, IdempotencyStore
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.signing import KmsSigner
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import FacilitiesRepository, LoadsReader
from relay.cloud import ROOT, ROOT_TEMPLATE, load_template

# A delivery whose storage stalls makes at most two calls that stall: the write it was
# doing, then Powertools deleting the record of the failed work.
STALLED_CALLS_PER_DELIVERY = 2


def _clients(deployed, monkeypatch) -> dict[str, object]:
    """Every boto3 client a module makes for itself, made the way it makes them."""
    deployed.use_env(monkeypatch, "LoadsFunction")
    loads = LoadsRepository(LoadsSettings())
    deployed.use_env(monkeypatch, "MessageFunction")
    message = MessageRepository(MessageSettings())
    deployed.use_env(monkeypatch, "GatepassFunction")
    gatepass = GatepassSettings()
    deployed.use_env(monkeypatch, "NavigateFunction")
    navigate = NavigateSettings()
    return {
        "loads dynamodb": loads.dynamodb.meta.client,
        "loads sqs": loads.sqs,
        "message dynamodb": message.dynamodb.meta.client,
        "message sqs": message.sqs,
        "gatepass dynamodb": GatepassRepository(gatepass).dynamodb.meta.client,
        "gatepass kms": KmsSigner(gatepass.gatepass_signing_key_id).kms,
        "navigate facilities": FacilitiesRepository(navigate).dynamodb.meta.client,
        "navigate loads": LoadsReader(navigate).dynamodb.meta.client,
        "idempotency records": IdempotencyStore("relay-idempotency", prefix="t").persistence.client,
    }


def test_every_modules_aws_clients_have_explicit_deadlines(deployed, monkeypatch):
    # (made under moto's credentials; making a client sends no request)
    for name, client in _clients(deployed, monkeypatch).items():
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (
            aws.CONNECT_TIMEOUT_SECONDS,
            aws.READ_TIMEOUT_SECONDS,
        ), name
        assert config.retries == {"mode": "standard", "total_max_attempts": aws.MAX_ATTEMPTS}, name


def _function_timeouts() -> dict[str, int]:
    out = {}
    for template in sorted(Path(ROOT, "modules").glob("*/template.yaml")):
        if template.parent.name == "notifications":  # a queue worker: no idempotency lease
            continue
        out[template.parent.name] = load_template(template)["Globals"]["Function"]["Timeout"]
    return out


def test_a_stalled_delivery_ends_inside_its_lease():
    worst = aws.call_worst_case() * STALLED_CALLS_PER_DELIVERY
    assert worst < LOCAL_IN_PROGRESS_TIMEOUT
    timeouts = _function_timeouts()
    assert set(timeouts) == {"loads", "gatepass", "navigate", "message"}
    for module, seconds in timeouts.items():
        assert worst < timedelta(seconds=seconds), module


def test_acceptance_times_are_trusted_as_long_as_deferred_writes_are_kept():
    queue = load_template(ROOT_TEMPLATE)["Resources"]["DeferredWritesQueue"]["Properties"]
    assert timedelta(seconds=int(queue["MessageRetentionPeriod"])) == ACCEPTED_AT_MAX_AGE
