"""The command line: ``python -m relay.contracts --check|--release [module ...]`` and
``relay contracts check|release [module]``."""

from __future__ import annotations

import argparse
import sys
from typing import Annotated

import typer

from ..paths import shown
from .baseline import check, ok, release
from .exceptions import ContractsError


def run_check(names: list[str] | None) -> int:
    try:
        checks = check(names or None)
    except ContractsError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 2
    for c in checks:
        if c.changed or not c.ok:
            print("\n".join(c.describe()))
    same = sum(1 for c in checks if c.ok and not c.changed)
    print(f"contracts: {same} of {len(checks)} published documents as released", flush=True)
    if not ok(checks):
        print("contracts: check failed (docs/contracts.md, Breaking-change check)", file=sys.stderr)
        return 1
    return 0


def run_release(names: list[str] | None) -> int:
    try:
        written = release(names or None)
    except ContractsError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {shown(path)}")
    if not written:
        print("contracts: every baseline is current")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.contracts",
        description="Check the modules' published contracts against their released baselines.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 on a refused change")
    action.add_argument(
        "--release", action="store_true", help="rewrite the baselines from the tree"
    )
    parser.add_argument("modules", nargs="*", help="the modules (default: all)")
    args = parser.parse_args(argv)
    return run_check(args.modules) if args.check else run_release(args.modules)


contracts_app = typer.Typer(
    help="The modules' published contracts against their released baselines.",
    no_args_is_help=True,
)
ModuleArg = Annotated[str | None, typer.Argument(help="One module (default: all)")]


@contracts_app.command("check")
def check_command(module: ModuleArg = None) -> None:
    """Refuse breaking changes to a released contract (exit 1), naming their consumers."""
    raise typer.Exit(run_check([module] if module else None))


@contracts_app.command("release")
def release_command(module: ModuleArg = None) -> None:
    """Record the tree's contracts as the released baselines."""
    raise typer.Exit(run_release([module] if module else None))
