"""The estimate of a run, from the same planning as the run itself, sending nothing.

:func:`estimate_request` plans a :class:`~._request.TranscribeRequest` exactly as the batch
engine does (normalise, identity, dedupe, one cache lookup), reads each remaining input's
length from its header (:func:`~._duration.audio_seconds`; URLs are not fetched) and
prices it (:func:`~._spend.run_price`). No transcription request is sent; the one call it
may make is the gateway's catalog (``GET /models``), and only when the model is answered by
a gateway and ``prices=`` does not name it.

A file over the model's limits (:mod:`._limits`: the known table and the 25 MB default)
is sent as chunks, one request each: :func:`~._chunking.chunk_requests` counts them from
the file's length, as the chunker sizes them: the first chunk under the bytes limit at raw 16 kHz
16-bit PCM (its worst case), later ones at the FLAC ratio of speech, about half, and every
one under the seconds limit with its margin. Cut points fall in pauses, so the real count
can differ by one. The audio minutes and the cost do not depend on how a file is cut.
"""

from __future__ import annotations

from ._batch import BatchResult, _plan
from ._cache import resolve_cache
from ._chunking import chunk_requests
from ._client import AsyncClient, Client
from ._estimate import Estimate, estimate_model
from ._limits import LimitBook
from ._pricing import lookup_price
from ._request import TranscribeRequest
from ._spend import measure_seconds, run_price

__all__ = ["chunk_requests", "estimate_request"]


def estimate_request(request: TranscribeRequest) -> Estimate:
    """What ``request`` would send and cost: requests after dedupe and cache, audio, cost.

    Rows the run would refuse (missing or invalid audio) are left out.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> req = TranscribeRequest([str(p) for p in pn.sample_paths()[:2]], model="local/fake",
    ...                         cache=False)
    >>> e = estimate_request(req)
    >>> e.requests, e.cost
    (2, 0.0)
    """
    given = request.client
    client: Client | AsyncClient
    owned: Client | None = None
    if given is None:
        client = owned = Client()
    elif isinstance(given, Client | AsyncClient):
        client = given
    else:
        client = owned = Client.from_settings(given)
    try:
        call = client.prepare(
            request.model, request.language, request.provider, **request.call_options()
        )
        result = BatchResult.empty(len(request.inputs))
        plan = _plan(request.inputs, request.languages, call, result, "store")
        store = resolve_cache(request.cache)
        served = store.answers(plan.keys)[0].tolist() if store is not None and plan.keys else []
        cached = {plan.keys[k] for k in served}
        todo = plan.jobs([k for k, key in enumerate(plan.keys) if key not in cached])
        lengths = dict(zip(todo, measure_seconds(job.source for job in todo.values()), strict=True))
        if todo:
            price = run_price(
                call.model, embedded=call.embedded, prices=request.prices, client=client
            )
        else:  # nothing to send: no reason to ask the gateway
            price = lookup_price(call.model, prices=request.prices)
        limits = LimitBook().limits_for(call.model)
        planned: list[tuple[str, float | None]] = []
        for key, rows in zip(plan.keys, plan.rows_per_key().tolist(), strict=True):
            length = lengths.get(key)
            pieces = chunk_requests(length, todo[key].source.size, limits) if key in todo else 1
            for _ in range(rows):
                if pieces == 1 or length is None:
                    planned.append((key, length))
                else:  # each chunk is a request of its own, with its share of the audio
                    planned.extend((f"{key}#chunk{i}", length / pieces) for i in range(pieces))
        part = estimate_model(planned, model=call.model, cached_keys=cached, price_per_minute=price)
    finally:
        if owned is not None:
            owned.close()
    return Estimate((part,))
