"""`streamstop fake-api`: a local simulator of the stop API with switchable faults.

It follows `api/stop-messages.md` and fills in what the vendor leaves open:
- per-item codes are chosen by `rules.code_for` from the uuid's last hex digit; a string
  that is not a uuid is answered 404 (the vendor does not validate);
- duplicates (case-insensitive) get one item; more than 10,000 uuids (or a body over
  8 MiB) is a 413, an empty `uuids` array a 400, all with a JSON `{"message"}`;
  `errors` is computed over the items actually returned;
- every stop request is recorded (`GET /_fake/received`, `--record-file`), rejected ones
  too, with `uuids` as sent (`[]` when the body has no readable `uuids` array);
- a uuid answered 200 or 202 is remembered as stopped; asked for again it gets the same
  code (an idempotent stop, what the vendor most plausibly does: the message stays
  stopped), or `--repeat-stop-code` (say 404, for an API that forgets stopped messages);
- faults, by CLI flag or at runtime with `POST /_fake/config`, apply in the order written
  in `responder.py`. Besides errors, throttling, latency and missing items, they shape
  what a hostile or broken API can send: `--huge-body-mb N` pads good answers with N MiB
  of items nobody asked for, `--gzip-answers` gzip-encodes them (with both, a gzip bomb:
  1 GiB of JSON in about 4 MB), `--malformed-item-rate` breaks single items (a null
  `messageUuid` or a string `code`), `--retry-after-date` sends an HTTP-date (say far in
  the future) as a 429's Retry-After;
- `--tls-certfile`/`--tls-keyfile` serve HTTPS (a test CA's certificate), and
  `--tls-client-cafile` also requires a client certificate signed by that CA (an mTLS
  gateway);
- the admin API under `/_fake/` (`received`, `reset`, `config`, `stats`) needs no auth and
  never shows the token; `stats` also gives the most stop requests started within any
  1 second (`max_requests_in_1s`) and how many uuids are stopped (`stopped_uuids`);
  `reset` forgets both, and the received requests.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, get_args

from streamstop.exitcodes import EXIT_CONFIG, EXIT_FAILURE
from streamstop.fakeapi.switches import SwitchError, Switches, with_changes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to `parser`: where to listen, plus one flag per switch."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind, 0 for any free one (%(default)s)"
    )
    parser.add_argument(
        "--path", default="/api/v1/message/stop", help="path of the stop endpoint (%(default)s)"
    )
    parser.add_argument(
        "--record-file", type=Path, metavar="PATH", help="append one JSON line per stop request"
    )
    parser.add_argument(
        "--tls-certfile", type=Path, metavar="PATH", help="serve HTTPS with this certificate (PEM)"
    )
    parser.add_argument(
        "--tls-keyfile", type=Path, metavar="PATH", help="its key, unless inside --tls-certfile"
    )
    parser.add_argument(
        "--tls-client-cafile",
        type=Path,
        metavar="PATH",
        help="with --tls-certfile: require a client certificate signed by this CA (mTLS)",
    )
    # Generated from the switch model so flags and `POST /_fake/config` keys stay one list.
    for name, spec in Switches.model_fields.items():
        flag = "--" + name.replace("_", "-")
        described = spec.description or ""
        if isinstance(spec.default, int | float) and not isinstance(spec.default, bool):
            described += f" (default {spec.default})"
        if spec.annotation is bool:
            parser.add_argument(
                flag, action="store_true", default=argparse.SUPPRESS, help=described
            )
        elif tuple in (spec.annotation, getattr(spec.annotation, "__origin__", None)):
            parser.add_argument(
                flag, action="append", metavar="UUID", default=argparse.SUPPRESS, help=described
            )
        else:
            metavar = "TOKEN" if name == "token" else _metavar(spec.annotation)
            parser.add_argument(flag, metavar=metavar, default=argparse.SUPPRESS, help=described)


def _metavar(annotation: object) -> str:
    kinds = {int: "N", float: "X"}
    for kind in (annotation, *get_args(annotation)):
        if kind in kinds:
            return kinds[kind]
    return "VALUE"


def main(args: argparse.Namespace) -> int:
    """Run the simulator until SIGTERM/SIGINT and return 0; 2 when a switch value or a
    TLS file is bad, 1 when it cannot listen or open the record file."""
    given = {name: value for name, value in vars(args).items() if name in Switches.model_fields}
    try:
        switches = with_changes(Switches(), given)
    except SwitchError as exc:
        print(f"streamstop fake-api: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    import ssl

    from streamstop.fakeapi.server import Listen, serve, tls_context
    from streamstop.logs import configure

    tls = None
    if args.tls_certfile is not None:
        try:
            tls = tls_context(args.tls_certfile, args.tls_keyfile, args.tls_client_cafile)
        except (OSError, ssl.SSLError) as exc:
            print(f"streamstop fake-api: --tls-certfile/--tls-keyfile: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    elif args.tls_keyfile is not None or args.tls_client_cafile is not None:
        print("streamstop fake-api: TLS options need --tls-certfile", file=sys.stderr)
        return EXIT_CONFIG
    # Warnings and errors only, as JSON: nothing per request.
    configure(level="warning")
    listen = Listen(args.host, args.port, args.path, args.record_file, tls)
    try:
        _run(serve(listen, switches))
    except OSError as exc:
        # A taken port or an unwritable record file: one line, not a traceback.
        print(f"streamstop fake-api: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    # uvloop when installed: fewer CPU cycles per request on a machine shared with Kafka.
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)
