"""The mobile app's recorded pacts: every supported version has one per module it calls,
recording writes only what is missing (never an existing version's file), and each file
says which version made the requests. The modules' verification (test_providers.py)
replays them all."""

from __future__ import annotations

import json
import os

import pytest

from tests.contracts import app_recordings
from tests.contracts.app_recordings import APP_PROVIDERS, RECORD_VARIABLE, VERSIONS

SUPPORTED = ("5.0", "5.1", "5.2")  # the current version and the two before it


def test_every_supported_app_version_has_its_recorded_pacts():
    if os.environ.get(RECORD_VARIABLE) == "1":
        written = [p for v in SUPPORTED for p in app_recordings.record(VERSIONS[v])]
        print("recorded:", *(p.name for p in written))
    gaps = app_recordings.missing(VERSIONS[v] for v in SUPPORTED)
    assert not gaps, (
        f"no recorded pact for {gaps}: record a new version with "
        f"{RECORD_VARIABLE}=1 .venv/bin/pytest tests/contracts/test_app_pacts.py"
    )


@pytest.mark.parametrize("version", SUPPORTED)
def test_an_app_pact_names_the_version_that_sends_its_requests(version):
    app = VERSIONS[version]
    for provider in APP_PROVIDERS:
        doc = json.loads(app_recordings.pact_file(app, provider).read_text())
        assert (doc["consumer"]["name"], doc["provider"]["name"]) == (app.consumer, provider)
        for interaction in doc["interactions"]:
            request = interaction["request"]
            assert request["headers"]["Relay-App-Version"] == [app.release]
            keyed = "Idempotency-Key" in request["headers"]
            assert keyed == (app.idempotency_keys and request["method"] == "POST")


def test_versions_differ_in_what_they_read_and_send():
    def answer_of(version: str, provider: str, description: str) -> dict:
        doc = json.loads(app_recordings.pact_file(VERSIONS[version], provider).read_text())
        found = next(i for i in doc["interactions"] if i["description"] == description)
        return found["response"]["body"]["content"]

    opened = {v: answer_of(v, "loads", "the app opens a load") for v in SUPPORTED}
    assert "current_stop" not in opened["5.0"] and "current_stop" in opened["5.1"]
    assert "version" not in opened["5.1"] and "version" in opened["5.2"]
    directions = {
        v: answer_of(v, "navigate", "the app asks for directions to the next stop")
        for v in SUPPORTED
    }
    assert "dock_hours" not in directions["5.1"]["destination"]
    assert "dock_hours" in directions["5.2"]["destination"]


def test_recording_writes_missing_versions_only(tmp_path):
    # GIVEN 5.1's loads pact already recorded (here: a file that must survive as it is)
    kept = app_recordings.pact_file(VERSIONS["5.1"], "loads", tmp_path)
    kept.write_text('{"recorded": "when 5.1 was released"}')
    # WHEN 5.1 is recorded
    written = app_recordings.record(VERSIONS["5.1"], tmp_path)
    # THEN only its missing files are written; the existing one is untouched
    assert sorted(p.name for p in written) == [
        f"relay-app-5.1-{p}.json" for p in sorted(set(APP_PROVIDERS) - {"loads"})
    ]
    assert kept.read_text() == '{"recorded": "when 5.1 was released"}'
    navigate = json.loads(
        app_recordings.pact_file(VERSIONS["5.1"], "navigate", tmp_path).read_text()
    )
    assert navigate["consumer"]["name"] == "relay-app-5.1"
