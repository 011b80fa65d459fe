"""The estimate of a run, from the same planning as the run itself, sending nothing.

:func:`estimate_request` plans a :class:`~._request.TranscribeRequest` exactly as the batch
engine does (normalise, identity, dedupe, one cache lookup), reads each remaining input's
length from its header (:func:`~._duration.audio_seconds`; URLs are not fetched) and
prices it (:func:`~._spend.run_price`). No transcription request is sent; the one call it
may make is the gateway's catalog (``GET /models``), and only when the model is answered by
a gateway and ``prices=`` does not name it.

What it does not count yet: a long file the run would split into chunks counts as one
request.
"""

from __future__ import annotations

from ._batch import BatchResult, _plan
from ._cache import resolve_cache
from ._client import AsyncClient, Client
from ._estimate import Estimate, estimate_model
from ._pricing import lookup_price
from ._request import TranscribeRequest
from ._spend import measure_seconds, run_price

__all__ = ["estimate_request"]


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
        jobs = _plan(request.inputs, request.languages, call, result, "store")
        store = resolve_cache(request.cache)
        cached = set(store.get_many(jobs)) if store is not None and jobs else set()
        todo = [job for key, job in jobs.items() if key not in cached]
        lengths = dict(
            zip(
                (job.key for job in todo),
                measure_seconds(job.source for job in todo),
                strict=True,
            )
        )
        if todo:
            price = run_price(
                call.model, embedded=call.embedded, prices=request.prices, client=client
            )
        else:  # nothing to send: no reason to ask the gateway
            price = lookup_price(call.model, prices=request.prices)
        planned = [(key, lengths.get(key)) for key, job in jobs.items() for _ in job.rows]
        part = estimate_model(planned, model=call.model, cached_keys=cached, price_per_minute=price)
    finally:
        if owned is not None:
            owned.close()
    return Estimate((part,))
