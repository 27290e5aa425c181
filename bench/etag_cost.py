"""``python -m bench.etag_cost``: what a conditional GET's tag costs on the real CPU.

The instruction counts (bench/instructions.py) run under Valgrind, whose virtual CPU has no
SHA instructions: OpenSSL's SHA-256 takes its software path there. This times, on the host's
own CPU (best of ``--repeat`` timeit runs), SHA-256 (the tag's hash) and BLAKE2b of the
benchmark's 1 KB load list, ``entity_tag`` (the hash as gateway.forwarding.conditional
feeds it, and its hex), and ``conditional_get`` on a 200 carrying that list (the tag, the
three headers added, the ``If-None-Match`` check), so that the count's figure can be set
against what the CPU spends (about 180 us per forward in-process, docs/benchmarks.md
section 7). Best run on an idle host: other work on the cores moves these by 2x.
"""

from __future__ import annotations

import argparse
import hashlib
import timeit
from collections.abc import Callable

from starlette.responses import Response

from gateway.forwarding.conditional import conditional_get, entity_tag

from .harness import LOAD_BODY

BODY = LOAD_BODY.encode()
CONTENT_TYPE = b"application/json"
REQUEST = [
    (b"host", b"gateway"),
    (b"authorization", b"Bearer x"),
    (b"accept", b"application/json"),
    (b"user-agent", b"bench"),
]


def answer() -> Response:
    """A module's 200 as the forward hands it on: the list and its two headers."""
    response = Response.__new__(Response)
    response.status_code = 200
    response.body = BODY
    response.raw_headers = [(b"content-type", CONTENT_TYPE), (b"content-length", b"1022")]
    response.background = None
    return response


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def costs(number: int = 20_000, repeat: int = 7) -> dict[str, float]:
    """{what: microseconds per call}; ``conditional_get`` without the answer's making."""

    def conditional() -> object:
        return conditional_get("GET", REQUEST, answer())

    def sha256() -> object:
        return hashlib.sha256(BODY).digest()

    def blake2b() -> object:
        return hashlib.blake2b(BODY, digest_size=16).digest()

    return {
        "SHA-256 of the list": best_us(sha256, number, repeat),
        "BLAKE2b of the list": best_us(blake2b, number, repeat),
        "entity_tag": best_us(lambda: entity_tag(BODY, CONTENT_TYPE), number, repeat),
        "conditional_get": best_us(conditional, number, repeat) - best_us(answer, number, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{len(BODY):,}-byte list, best of {args.repeat} x {args.number:,} calls")
    for what, us in costs(args.number, args.repeat).items():
        print(f"  {what:<26} {us:6.2f} us")


if __name__ == "__main__":
    main()
