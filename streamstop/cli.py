"""Command line: `streamstop run | check-config | topics | fake-api`, and `--version`.

Every command's `--help` says where the configuration comes from, how the environment
overrides it, what the exit codes mean and where the docs are, so a first user needs
nothing else to start.

Never: print anything but the JSON on `check-config`'s stdout, or a traceback for a
configuration problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from streamstop import __version__
from streamstop.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_KAFKA, EXIT_OK

DOCS_URL = "https://github.com/streamstop/streamstop/tree/main/docs"

CONFIG_HELP = """\
configuration:
  The config file is the first of: --config PATH; $STREAMSTOP_CONFIG;
  ./config/streamstop.toml if it exists. With none, built-in defaults apply.
  Environment variables STREAMSTOP_<SECTION>__<KEY> (two underscores) override
  the file, e.g. STREAMSTOP_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092,broker-2:9092
  The stop API token (for run): STREAMSTOP_API__TOKEN, or api.token_file naming a file.
  `streamstop check-config --show-origin` shows every value and where it came from.
"""

DOCS_HELP = f"""\
docs (in the source tree, also at {DOCS_URL}):
  docs/configuration.md  every key, the lookup order, secrets
  docs/cluster.md        run it on your cluster: topics, ACLs, Secret, helm install
  docs/events.md         the input, result and DLQ events
  docs/operations.md     scaling, upgrades, alerts, replays
"""


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal; keeps the epilog's own lines (lists, examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _exit_codes(*rows: tuple[int, str]) -> str:
    return "exit codes:\n" + "".join(f"  {code}  {meaning}\n" for code, meaning in rows)


RUN_EXITS = _exit_codes(
    (EXIT_OK, "clean shutdown (SIGTERM or SIGINT)"),
    (EXIT_FAILURE, "internal fatal error, or a second signal during shutdown"),
    (EXIT_CONFIG, "configuration error: one JSON log line (config_error) per problem"),
)
CHECK_EXITS = _exit_codes(
    (EXIT_OK, "the configuration is valid (printed as JSON on stdout)"),
    (EXIT_CONFIG, "configuration error: one line per problem on stderr"),
)
TOPICS_EXITS = _exit_codes(
    (EXIT_OK, "every topic exists and streamstop can use it (warnings may be printed)"),
    (EXIT_CONFIG, "a topic is missing or unusable as configured, or a configuration error"),
    (EXIT_KAFKA, "Kafka unreachable, or it refused (authentication, authorization, timeout)"),
)
FAKE_API_EXITS = _exit_codes(
    (EXIT_OK, "stopped by SIGTERM or SIGINT"),
    (EXIT_FAILURE, "cannot listen on the port or open the record file"),
    (EXIT_CONFIG, "a bad option value"),
)


def _epilog(exits: str, config: bool = True) -> str:
    return "\n".join(part for part in (CONFIG_HELP if config else "", exits, DOCS_HELP) if part)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamstop",
        description="Cancel outgoing messages from Kafka events through the stop API.",
        epilog="first steps (every command takes --help):\n"
        "  streamstop check-config --show-origin\n"
        "  streamstop topics check          (or topics create)\n"
        "  streamstop run\n\n" + DOCS_HELP,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"streamstop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon: consume cancel requests, call the stop API, publish "
        "one result per record, commit. Logs one JSON object per line on stdout; "
        "/livez, /readyz and /metrics on observability.http_port.",
        epilog=_epilog(RUN_EXITS),
        formatter_class=_Formatter,
    )
    run.add_argument("--config", metavar="PATH", help="TOML config file (see below)")

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print it with secrets masked",
        description="Validate the configuration as `run` would and print the effective "
        "config as JSON on stdout, secrets masked. Everything else (the file loaded, "
        "--show-origin, problems) goes to stderr, so `check-config | jq` works.",
        epilog=_epilog(CHECK_EXITS),
        formatter_class=_Formatter,
    )
    check.add_argument("--config", metavar="PATH", help="TOML config file (see below)")
    check.add_argument(
        "--show-origin",
        action="store_true",
        help="also list every key with its value and where it came from (file, "
        "environment variable, default), on stderr",
    )

    from streamstop.topics_command import add_arguments as add_topics_arguments

    topics = commands.add_parser(
        "topics",
        help="create or check the Kafka topics streamstop uses",
        description="Create or check the input, output and DLQ topics the config names.",
        epilog=_epilog(TOPICS_EXITS),
        formatter_class=_Formatter,
    )
    add_topics_arguments(topics, _epilog(TOPICS_EXITS), _Formatter)

    from streamstop.fakeapi import add_arguments as add_fake_arguments

    fake = commands.add_parser(
        "fake-api",
        help="run a local simulator of the stop API",
        description="A local simulator of the stop API, with switches to inject faults.",
        epilog=_epilog(FAKE_API_EXITS, config=False),
        formatter_class=_Formatter,
    )
    add_fake_arguments(fake)
    return parser


def _check_config(path: str | None, show_origin: bool) -> int:
    from streamstop.config import (
        ConfigError,
        find_config_file,
        load,
        render_effective,
        render_origins,
    )

    try:
        file = find_config_file(path)
        _say(f"config file: {file}" if file else _NO_FILE)
        loaded = load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _say(f"config error: {problem}")
        return EXIT_CONFIG
    for note in loaded.notes:
        _say(f"note: {note}")
    if show_origin:
        print(render_origins(loaded), file=sys.stderr)
    print(render_effective(loaded.settings))
    return EXIT_OK


_NO_FILE = (
    "no config file (no --config, no $STREAMSTOP_CONFIG, no ./config/streamstop.toml): "
    "built-in defaults and STREAMSTOP_* variables"
)


def _say(line: str) -> None:
    print(f"streamstop: {line}", file=sys.stderr)


def _run(path: str | None) -> int:
    import structlog

    from streamstop import logs
    from streamstop.app import run
    from streamstop.config import ConfigError, load

    log = structlog.get_logger("streamstop.cli")
    try:
        loaded = load(path)
    except ConfigError as exc:
        # The configured log format is unknown here: JSON, as every other line of `run`.
        logs.configure()
        for problem in exc.problems:
            log.error("config_error", problem=problem)
        return EXIT_CONFIG
    observability = loaded.settings.observability
    logs.configure(observability.log_level, observability.log_format)
    log.info("config_loaded", file=str(loaded.file) if loaded.file else None)
    for note in loaded.notes:
        log.warning("config_note", note=note)
    return run(loaded.settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: the process's arguments), run the command, return its exit code."""
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    if args.command == "fake-api":
        from streamstop.fakeapi import main as fake_main

        return fake_main(args)
    try:
        return _report(args)
    except BrokenPipeError:
        # The reader left (`check-config | head`): not a failure; keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    """The commands that print a report and exit: check-config, topics."""
    if args.command == "check-config":
        return _check_config(args.config, args.show_origin)
    from streamstop.topics_command import main as topics_main

    return topics_main(args)
