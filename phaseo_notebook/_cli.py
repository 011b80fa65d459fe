"""The ``phaseo-notebook`` command line.

One sub-command per job, each added by its own ``_add_<command>`` function (which builds
its parser and sets ``handler``) and run by its own ``_run_<command>`` function. To add a
command, write that pair and list the first in ``_COMMANDS``. Handlers import what they
need when they run, so ``--help`` and unrelated commands stay fast.

Examples
--------
>>> main(["serve", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

#: Read by ``serve`` when ``--api-key`` is not given.
ENV_LOCAL_API_KEY = "PHASEO_LOCAL_API_KEY"

# `add_subparsers()` returns a private argparse type; this alias keeps signatures readable.
_Subparsers = Any


def _add_serve(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the local speech-to-text gateway (same API as the remote one)",
        description=(
            "Run the local gateway: POST /v1/audio/transcriptions answered by an offline "
            "engine, plus /v1/models, /files/{name}, /healthz and the /_admin routes. "
            "Runs until Ctrl-C or SIGTERM. Prints one line with the base URL. The API key "
            f"comes from --api-key, else ${ENV_LOCAL_API_KEY}; with neither, a random key "
            "is generated and printed (a key you chose is never printed)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to bind, 0 for any free one (default %(default)s)",
    )
    parser.add_argument(
        "--engine",
        choices=("fake", "pocketsphinx"),
        default="fake",
        help=(
            "engine loaded at start and serving the --model names given without one "
            "(default %(default)s); local/fake and local/pocketsphinx are always served"
        ),
    )
    parser.add_argument(
        "--mode",
        choices=("strict", "live", "lenient"),
        default="strict",
        help=(
            "request shapes accepted: strict = the published contract (audio_url/audio_b64), "
            "live = like the live gateway (multipart 'file' required), lenient = any of them "
            "(default %(default)s)"
        ),
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"key clients must send as Bearer (else ${ENV_LOCAL_API_KEY})",
    )
    parser.add_argument("--no-auth", action="store_true", help="accept requests without any key")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[=ENGINE]",
        help="serve an extra model name (e.g. openai/whisper-1=fake); repeatable",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every transcription answer"
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="fraction of transcriptions answered 429/500/502/503",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    parser.add_argument(
        "--files-dir", type=Path, default=None, help="directory served at /files/{name}"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes of the pocketsphinx engine"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (anyone reaching it can send audio and read --files-dir)",
    )
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from phaseo_notebook._gateway._faults import Faults
    from phaseo_notebook._gateway._local import generate_api_key, serve_forever

    def fail(message: str) -> int:
        print(f"phaseo-notebook serve: error: {message}", file=sys.stderr)
        return 2

    generated = False
    if args.no_auth:
        api_key: str | None = None
    else:
        api_key = args.api_key or os.environ.get(ENV_LOCAL_API_KEY) or None
        if api_key is None:
            api_key, generated = generate_api_key(), True
    models: dict[str, str] = {}
    for spec in args.model:
        name, _, engine = spec.partition("=")
        models[name.strip()] = engine.strip() or args.engine
    if args.files_dir is not None and not args.files_dir.is_dir():
        return fail(f"--files-dir {str(args.files_dir)!r} is not a directory")

    def announce(url: str) -> None:
        if api_key is None:
            auth = "no auth"
        elif generated:
            auth = f"API key {api_key} (generated; set --api-key or ${ENV_LOCAL_API_KEY} to choose)"
        else:
            auth = "API key from --api-key/$" + ENV_LOCAL_API_KEY
        print(
            f"phaseo-notebook local gateway on {url} (engine {args.engine}, mode {args.mode}, "
            f"{auth}); Ctrl-C to stop",
            flush=True,
        )

    try:
        faults = Faults(latency=args.latency, error_rate=args.error_rate, seed=args.seed)
        asyncio.run(
            serve_forever(
                host=args.host,
                port=args.port,
                engine=args.engine,
                mode=args.mode,
                api_key=api_key,
                models=models,
                faults=faults,
                files_dir=args.files_dir,
                workers=args.workers,
                allow_remote=args.allow_remote,
                on_ready=announce,
            )
        )
    except (ValueError, OSError) as err:
        return fail(str(err))
    except KeyboardInterrupt:
        pass
    return 0


_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (_add_serve,)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command.

    Examples
    --------
    >>> build_parser().parse_args(["serve", "--port", "0"]).port
    0
    """
    parser = argparse.ArgumentParser(
        prog="phaseo-notebook",
        description="Speech-to-text for notebooks and dataframes, from the command line.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage error.

    Examples
    --------
    >>> main(["serve", "--host", "0.0.0.0"])  # doctest: +SKIP
    2
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
