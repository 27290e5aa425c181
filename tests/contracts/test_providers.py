"""Provider verification: every HTTP interaction of every pact in contracts/pacts/ naming a
module as provider, replayed against that module alone (its ``create_app()`` served on
loopback, moto in-process), each interaction's provider state seeded by
tests/contracts/states.py. A module that no longer answers what a consumer reads fails
here with Pact's account of the mismatch."""

from __future__ import annotations

from modules.gatepass.app import create_app as gatepass_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from modules.loads.app import create_app as loads_app
from modules.loads.config import LoadsSettings
from modules.loads.repository import LoadsRepository
from modules.loads.service import LoadsService
from modules.message.app import create_app as message_app
from modules.message.config import MessageSettings
from modules.message.repository import MessageRepository
from modules.message.service import MessageService
from modules.navigate.app import create_app as navigate_app
from modules.navigate.config import NavigateSettings
from modules.navigate.repository import FacilitiesRepository, LoadsReader
from modules.navigate.service import NavigateService
from tests.contracts import states
from tests.contracts.pacts import verify_provider


def test_loads_honours_its_pacts(module_env, tmp_path):
    env = module_env("LoadsFunction")
    service = LoadsService(LoadsRepository(LoadsSettings()))
    verified = verify_provider(
        "loads", loads_app(service=service), states.loads_states(service, env), tmp_path
    )
    assert {p.name for p in verified} >= {"gateway-loads.json", "relay-app-5.2-loads.json"}


def test_gatepass_honours_its_pacts(module_env, tmp_path):
    env = module_env("GatepassFunction")
    settings = GatepassSettings()
    service = GatepassService(
        GatepassRepository(settings), KmsSigner(settings.gatepass_signing_key_id)
    )
    verified = verify_provider(
        "gatepass",
        gatepass_app(service=service),
        states.gatepass_states(service, env),
        tmp_path,
    )
    assert {p.name for p in verified} >= {"gateway-gatepass.json", "relay-app-5.2-gatepass.json"}


def test_navigate_honours_its_pacts(module_env, tmp_path):
    env = module_env("NavigateFunction")
    settings = NavigateSettings()
    facilities = FacilitiesRepository(settings)
    service = NavigateService(facilities, LoadsReader(settings))
    verified = verify_provider(
        "navigate",
        navigate_app(service=service),
        states.navigate_states(facilities, env),
        tmp_path,
    )
    assert {p.name for p in verified} >= {"gateway-navigate.json", "relay-app-5.2-navigate.json"}


def test_message_honours_its_pacts(module_env, tmp_path):
    env = module_env("MessageFunction")
    service = MessageService(MessageRepository(MessageSettings()))
    verified = verify_provider(
        "message", message_app(service=service), states.message_states(service, env), tmp_path
    )
    assert {p.name for p in verified} >= {"relay-app-5.2-message.json"}
