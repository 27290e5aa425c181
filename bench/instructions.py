"""Instructions per forward, counted by Valgrind's callgrind: the before/after figure that
host noise does not move.

On a shared 2-core host a gateway's RPS moves 2-3x between rounds, and even its CPU time
per request moves 20-30% (frequency, the other core's work, cache). The number of
instructions the interpreter executes for one forward does not: it is the same from run
to run within a fraction of a percent, so a 5% change in the gateway's own work shows,
whatever the host is doing (the practice of instruction-count benchmarks such as
iai-callgrind). It counts work, not waiting: the server and the sockets are the same code
in both trees and are left out (bench/callgrind_forward.py calls the ASGI app directly).

Each figure: one process forwards ``SHORT`` requests and others ``LONG``, with
instrumentation on for exactly those requests; (long - short) / (LONG - SHORT) removes
what switching instrumentation on and off costs. Each long window is one round.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from .harness import LOAD_BODY

DRIVER = Path(__file__).with_name("callgrind_forward.py")
SERVER_WARMUP = 200
SHORT, LONG = 100, 400
MODES = ("hop", "fast-fail")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def count(root: Path, mode: str, requests: int, body: Path, out: Path) -> int:
    """Instructions executed while ``requests`` forwards of ``mode`` ran in the tree at
    ``root``."""
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.%p.out",
        sys.executable,
        "-P",
        str(DRIVER),
        "--mode",
        mode,
        "--requests",
        str(requests),
        "--body",
        str(body),
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=out, timeout=600)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run in {root} ({mode}) failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request(trees: dict[str, Path], rounds: int) -> dict[tuple[str, str], list[float]]:
    """{(tree, mode): [instructions per forward, one per round]}, two processes at a time."""
    with tempfile.TemporaryDirectory(prefix="relay-bench-callgrind-") as tmp:
        out = Path(tmp)
        body = out / "body.json"
        body.write_text(LOAD_BODY)
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:

            def windows(root: Path, mode: str) -> list[concurrent.futures.Future[int]]:
                """The short window, then one long window per round."""
                sizes = [SHORT] + [LONG] * rounds
                return [pool.submit(count, root, mode, n, body, out) for n in sizes]

            started = {(t, m): windows(root, m) for t, root in trees.items() for m in MODES}
            counts = {key: [f.result() for f in futures] for key, futures in started.items()}
    return {
        key: [(long - short) / (LONG - SHORT) for long in longs]
        for key, (short, *longs) in counts.items()
    }


# --- the whole server: what the hop ratio measures ---------------------------------------


def callgrind_wrapper(out: Path) -> list[str]:
    """What a server runs under (:class:`bench.harness.Gateway`'s ``wrapper``): callgrind,
    instrumentation off until :func:`server_per_request` turns it on."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.%p.out"]  # fmt: skip


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True)


def _dumped(out: Path, pid: int, n: int) -> int:
    text = (out / f"callgrind.{pid}.out.{n}").read_text()
    found = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in callgrind dump {n} of {pid}")
    return int(found.group(1))


def server_per_request(pid: int, url: str, token: str, out: Path, rounds: int) -> list[float]:
    """Instructions per request of the server process ``pid`` (started under
    :func:`callgrind_wrapper`, writing to ``out``): the event loop, HTTP parsing, the
    gateway and the forward, everything but the kernel. Requests go one at a time over one
    keep-alive connection; callgrind dumps after a short window and after each long one,
    each dump holding only its own window's count, and (long - short) / (LONG - SHORT)
    is one round."""
    headers = {"authorization": "Bearer " + token}
    with httpx.Client(headers=headers, timeout=60) as client:

        def forward(n: int) -> None:
            for _ in range(n):
                r = client.get(url)
                if r.status_code != 200:
                    raise RuntimeError(f"{url} answered {r.status_code} under callgrind")

        forward(SERVER_WARMUP)
        _control(pid, "-i", "on")
        _control(pid, "-z")
        windows = [SHORT] + [LONG] * rounds
        for requests in windows:
            forward(requests)
            _control(pid, "-d")
        _control(pid, "-i", "off")
    short = _dumped(out, pid, 1)
    return [(_dumped(out, pid, n) - short) / (LONG - SHORT) for n in range(2, len(windows) + 1)]


def ratio_targets(
    report: Any,
    cost: dict[str, list[float]],
    pairs: tuple[tuple[str, str, str], ...],
    *,
    comparison: str,
    base_name: str,
    drivers: int,
    target: float,
) -> None:
    """One judged target per (base mode, changed mode, request) of ``pairs``: the
    instructions per in-process forward of the changed mode over the base's, round by
    round, against ``target`` (the cells and regions phases: what routing adds to a hop)."""
    from bench.run import ratio_text
    from bench.verdicts import NOISE_THRESHOLDS, ratios, spread, verdict

    threshold = NOISE_THRESHOLDS["baseline"]
    for base, changed, what in pairs:
        if not cost.get(base) or not cost.get(changed):
            continue
        ref = spread(cost[base])
        ratio = spread(ratios(cost[changed], cost[base]))
        report.target(
            f"instructions per in-process forward, {what}, {comparison} "
            f"(callgrind, {drivers} drivers in turn)",
            f"<= {target:.2f}x",
            ratio,
            ratio_text(ratio),
            f"instructions per forward, {what}, {base_name}",
            ref,
            ref.show("{:,.0f}"),
            threshold,
            verdict(ratio.median, target, at_most=True, reference=ref, threshold=threshold),
        )


def main() -> None:
    """``python -m bench.instructions [ROOT ...]``: instructions per forward of each tree."""
    roots = [Path(a).resolve() for a in sys.argv[1:]] or [Path(__file__).resolve().parents[1]]
    figures = per_request({str(r): r for r in roots}, rounds=2)
    for (tree, mode), values in figures.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{mode:<10} {tree}: {shown} instructions per forward")


if __name__ == "__main__":
    main()


# --- an in-process forward of a benchmark module, under callgrind ---------------------------
# (bench/release_cost.py, bench/cell_cost.py: ``python -m <module> --forward <mode>``)


def forward_argv(
    module: str, mode: str, requests: int, out: Path | str, python: str = sys.executable
) -> list[str]:
    """The measured process: ``requests`` forwards of ``module``'s ``mode`` under callgrind,
    counting only while they run (``--instr-atstart=no``; bench/callgrind_forward.py turns
    it on)."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.%p.out",
        python,
        "-m",
        module,
        "--forward",
        mode,
        "--requests",
        str(requests),
    ]


def forward_count(module: str, mode: str, requests: int, out: Path, timeout: float) -> int:
    """Instructions executed while ``requests`` forwards of ``module``'s ``mode`` ran."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
    argv = forward_argv(module, mode, requests, out)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=root, timeout=timeout)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run ({module} {mode}) failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def forward_cost(
    module: str, modes: list[str], rounds: int, *, short: int, long: int, timeout: float
) -> dict[str, list[float]]:
    """Instructions per forward of each of ``module``'s modes, one figure per round (every
    mode once per round): (long window - short window) / (long - short)."""
    out: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="relay-bench-forward-") as tmp:
        for _ in range(rounds):
            for mode in out:
                low = forward_count(module, mode, short, Path(tmp), timeout)
                high = forward_count(module, mode, long, Path(tmp), timeout)
                out[mode].append((high - low) / (long - short))
    return out
