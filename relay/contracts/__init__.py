"""Breaking-change check: each module's published contract against its released baseline.

A module publishes two documents, both OpenAPI 3.1 so one checker reads them:

- ``openapi.json``: its HTTP API, ``create_app(...).openapi()`` built offline
  (:func:`relay.openapi.module_document`);
- ``events.json``: what it publishes to other components (table records and their stream
  images, queue and topic messages, :data:`EVENTS`), one pseudo-operation
  ``GET /events/<name>`` per event whose 200 body is the event's schema. Nothing serves
  those paths; the form only lets the same rules judge events as answers.

The released baselines are committed under ``contracts/baseline/<module>/``. The check
compares each document with its baseline through Optic (``@useoptic/optic``, pinned by
``tools/optic/package-lock.json``, installed in ``.tools/optic`` by ``make optic``; it runs
offline, telemetry off) and its ``breaking-changes`` rules (``tools/optic/standard.yml``):
a removed operation, status code or response field, a response field made optional, a
changed type, an enum value added to an answer or removed from a request, a new required
request field or parameter. What those rules leave out, :mod:`.constraints` adds: a
request field's constraint made stricter (a lower ``maxLength``, a higher ``minimum``, a
new ``pattern``), an answer field's made looser.
Each refusal names the module, the operation and field, and the consumers whose pacts
(``contracts/pacts/*.json``) call that operation or read that field.

A module breaks its contract on purpose by declaring a new major: its contract version is
its app's ``info.version`` (FastAPI's ``version=``, ``module_kit.app.API_VERSION`` unless
the module sets its own; a module without an app, notifications, declares
``CONTRACT_VERSION`` in its package). A current major above the baseline's is allowed to
break, and the check reports what it breaks and whom; ``release`` then records it.

Nullable fields (``X | None``, rendered ``anyOf: [X, {type: null}]``) are compared as the
equivalent OpenAPI 3.1 type list (``type: [X, "null"]``): Optic treats every ``anyOf`` as
a union and skips the removal of a union-typed property, which would hide the removal of
any optional field.

The package, in reading order: :mod:`.published` (the documents, :data:`EVENTS`),
:mod:`.optic` (Optic and its findings), :mod:`.constraints` (the constraints Optic does
not judge), :mod:`.pacts` (the consumers, from the pact files), :mod:`.baseline` (the
check and the release), :mod:`.cli` (the commands) and :mod:`.exceptions`:

    python -m relay.contracts --check [module ...]     # exit 1 on a refused change
    python -m relay.contracts --release [module ...]   # rewrite the baselines from the tree
    relay contracts check|release [module]
"""

from .baseline import BASELINE_DIR, BreakingChange, DocumentCheck, check, ok, release
from .cli import contracts_app, main, run_check, run_release
from .exceptions import ContractsError
from .optic import Finding, Optic
from .pacts import PACTS_DIR, Interaction, consumers, load_pacts
from .published import (
    EVENTS,
    EVENTS_FILE,
    OPENAPI_FILE,
    Event,
    comparable,
    contract_version,
    documents,
    events_document,
    major,
    modules,
    openapi_document,
)

__all__ = [
    "BASELINE_DIR",
    "EVENTS",
    "EVENTS_FILE",
    "OPENAPI_FILE",
    "PACTS_DIR",
    "BreakingChange",
    "ContractsError",
    "DocumentCheck",
    "Event",
    "Finding",
    "Interaction",
    "Optic",
    "check",
    "comparable",
    "consumers",
    "contract_version",
    "contracts_app",
    "documents",
    "events_document",
    "load_pacts",
    "main",
    "major",
    "modules",
    "ok",
    "openapi_document",
    "release",
    "run_check",
    "run_release",
]
