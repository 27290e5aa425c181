"""The gateway's identity-context signer, loaded on first use (never at import time)."""

from __future__ import annotations

from typing import Any

from gateway import aws_calls
from gateway.config import GatewaySettings
from module_kit.signed_context import IdentitySigner
from shared_contracts.errors import UnavailableError


class SignerProvider:
    def __init__(self, settings: GatewaySettings, *, secrets: Any = None) -> None:
        self.settings = settings
        self._secrets = secrets
        self._signer: IdentitySigner | None = None

    def get(self) -> IdentitySigner:
        if self._signer is None:
            self._signer = IdentitySigner(self._private_key())
        return self._signer

    def _private_key(self) -> str:
        if self.settings.identity_signing_key:
            return self.settings.identity_signing_key
        if self.settings.identity_signing_key_secret_arn:
            if self._secrets is None:  # read once per instance, with a deadline
                self._secrets = aws_calls.client("secretsmanager")
            return self._secrets.get_secret_value(
                SecretId=self.settings.identity_signing_key_secret_arn
            )["SecretString"]
        raise UnavailableError("the gateway has no identity signing key configured")
