"""SigV4 signing of upstream calls: module function URLs use ``AuthType: AWS_IAM`` in AWS."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx

SIGNED_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class SigV4Auth(httpx.Auth):
    requires_request_body = True

    def __init__(self, region: str, service: str = "lambda", credentials: Any = None) -> None:
        self.region = region
        self.service = service
        self._credentials = credentials

    def _frozen_credentials(self) -> Any:
        if self._credentials is None:
            import boto3  # only when signing is on: keeps the local gateway's import light

            self._credentials = boto3.Session().get_credentials()
        creds = self._credentials
        return creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth as BotoSigV4
        from botocore.awsrequest import AWSRequest

        headers = {"host": request.url.netloc.decode()}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        aws_request = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        BotoSigV4(self._frozen_credentials(), self.service, self.region).add_auth(aws_request)
        for name in SIGNED_HEADERS:
            if name in aws_request.headers:
                request.headers[name] = aws_request.headers[name]
        yield request
