"""A local token issuer shaped like Amazon Cognito, for `make dev` and the tests.

Its RSA key pair is generated once into the state directory; the gateway reads its JWKS
from a ``file://`` URL exactly as it reads a user pool's JWKS over HTTPS in AWS.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared_contracts.identity import Role

DEV_ISSUER = "https://cognito-idp.local.relay.invalid/local-pool"
DEV_CLIENT_ID = "relay-mobile-local"
DEFAULT_TTL_SECONDS = 12 * 3600


class DevIssuer:
    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        *,
        issuer: str = DEV_ISSUER,
        client_id: str = DEV_CLIENT_ID,
    ) -> None:
        self.key = private_key
        self.issuer = issuer
        self.client_id = client_id
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
        self.kid = uuid.uuid5(uuid.NAMESPACE_OID, jwk["n"]).hex[:16]
        self.jwk = {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    @classmethod
    def generate(cls) -> DevIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def load_or_create(cls, directory: Path) -> DevIssuer:
        path = directory / "dev-issuer-key.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return cls(key)
        issuer = cls.generate()
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            issuer.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return issuer

    def jwks(self) -> dict:
        return {"keys": [self.jwk]}

    def write_jwks(self, directory: Path) -> Path:
        path = directory / "dev-issuer-jwks.json"
        path.write_text(json.dumps(self.jwks()))
        return path

    def mint(
        self,
        sub: str,
        role: Role,
        driver_id: str | None = None,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        now: float | None = None,
        token_use: str = "id",  # noqa: S107 - a Cognito token kind, not a password
        **overrides: object,
    ) -> str:
        now = time.time() if now is None else now
        claims: dict = {
            "sub": sub,
            "iss": self.issuer,
            "token_use": token_use,
            "iat": int(now),
            "exp": int(now) + ttl_seconds,
            "cognito:groups": [role.value],
            "auth_time": int(now),
        }
        claims["aud" if token_use == "id" else "client_id"] = self.client_id  # noqa: S105
        if driver_id:
            claims["custom:driver_id"] = driver_id
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
