"""``inferplex`` command line: one subcommand per process or operator task.

Each subcommand lives with the code it drives and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returns an
exit code). Imports stay lazy so ``inferplex --help`` is fast and one broken
subsystem does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module path of each subcommand group's ``register`` function
_SUBCOMMANDS = [
    "worker.main",
    "controlplane.up",
    "controlplane.serve",
    "controlplane.cli_tenant",
    "controlplane.cli_demo",
    "sim.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferplex", description="multi-tenant DNN inference service")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod_name in _SUBCOMMANDS:
        importlib.import_module(mod_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
