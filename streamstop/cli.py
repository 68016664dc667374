"""Command line: `streamstop run | check-config | fake-api`, and `--version`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streamstop import __version__
from streamstop.exitcodes import EXIT_CONFIG


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamstop",
        description="Cancel outgoing messages from Kafka events through the stop API.",
    )
    parser.add_argument("--version", action="version", version=f"streamstop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the daemon", description="Run the daemon.")
    run.add_argument("--config", metavar="PATH", help="TOML config file")

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets masked",
        description="Validate the configuration; print the effective config as JSON "
        "with secrets masked, or one line per problem and exit 2.",
    )
    check.add_argument("--config", metavar="PATH", help="TOML config file")

    from streamstop.fakeapi import add_arguments

    fake = commands.add_parser(
        "fake-api",
        help="run a local simulator of the stop API",
        description="A local simulator of the stop API, with switches to inject faults.",
    )
    add_arguments(fake)
    return parser


def _load(path: str | None) -> object:
    from streamstop.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"streamstop: config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "check-config":
        from streamstop.config import Settings, render_effective

        settings = _load(args.config)
        assert isinstance(settings, Settings)
        print(render_effective(settings))
        return 0
    if args.command == "run":
        from streamstop.app import run
        from streamstop.config import Settings

        settings = _load(args.config)
        assert isinstance(settings, Settings)
        return run(settings)
    from streamstop.fakeapi import main as fake_main

    return fake_main(args)
