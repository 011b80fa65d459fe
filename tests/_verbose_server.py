"""A small gateway on 127.0.0.1 that answers ``verbose_json`` with chosen segments and words.

It records every request's form fields and file size, so tests can check what went on the
wire, and answers each transcription with the segments and words the test gave it, plus a
few malformed items that the client must drop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import soundfile as sf
from aiohttp import BodyPartReader, web

SEGMENTS = [
    {"id": 0, "start": 0.0, "end": 1.25, "text": " Ask not", "tokens": [1, 2]},
    {"id": 1, "start": 1.25, "end": 2.5, "text": " what your country"},
    {"start": "soon", "end": 3.0, "text": "no time"},
    "not a segment",
]
WORDS = [
    {"start": 0.0, "end": 0.5, "word": "Ask"},
    {"start": 0.5, "end": 1.25, "word": "not"},
    {"start": 1.0, "end": float("inf"), "word": "broken"},
]


class VerboseServer:
    """The running server: ``url``, and ``requests`` as a list of ``{field: value}`` dicts."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            name = part.name or ""
            if part.filename is not None:
                form[name] = {"filename": part.filename, "size": len(data)}
                form["_audio"] = data
            else:
                form.setdefault(name, []).append(data.decode())
        audio = form.pop("_audio", None)
        b64 = form.get("audio_b64")
        if audio is None and b64:
            audio = base64.b64decode(b64[0])
        if audio is not None:
            form["audio_bytes"] = len(audio)
            try:
                form["audio_seconds"] = sf.info(io.BytesIO(audio)).duration
            except RuntimeError:  # not audio soundfile reads (a WAV header of a test clip)
                form["audio_seconds"] = None
        self.requests.append(form)
        body: dict[str, Any] = {"text": "Ask not what your country", "duration": 2.5}
        if form.get("response_format") == ["verbose_json"]:
            body["segments"] = SEGMENTS
            if "word" in "".join(form.get("timestamp_granularities", [])):
                body["words"] = WORDS
        return web.Response(
            text=__import__("json").dumps(body, allow_nan=True), content_type="application/json"
        )


@contextmanager
def verbose_server() -> Iterator[VerboseServer]:
    """Run a :class:`VerboseServer` in a thread for the ``with`` block."""
    server = VerboseServer()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}/v1"
        runner_box.append(runner)
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
