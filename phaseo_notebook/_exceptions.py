"""The one exception tree of phaseo-notebook.

Every error the package raises on purpose is a :class:`PhaseoError`::

    PhaseoError
    ├── ConfigurationError          bad or missing settings (no API key for a remote model, ...)
    ├── AudioInputError             an audio input that is invalid before anything is sent
    ├── BudgetExceededError         a request not sent: it would take the run over its budget
    ├── CacheError                  a cache directory that cannot be used
    ├── MissingExtraError           an optional dependency is not installed (also an ImportError)
    ├── EngineModelError            a local engine's model is missing or not the one expected
    └── APIError                    something went wrong talking to a gateway
        ├── APIConnectionError      no answer: refused, reset, dropped
        │   └── APITimeoutError     no answer in time
        ├── APIResponseError        an answer that is not a usable body (truncated, not JSON, no text)
        │   └── ResponseTooLargeError an answer over the size the client reads (never retried)
        └── APIStatusError          an HTTP error status, with the gateway's error body
            ├── BadRequestError          400
            │   └── UnknownModelError    400 unsupported model (or a 404 naming the model)
            ├── AuthenticationError      401
            ├── PaymentRequiredError     402
            ├── PermissionDeniedError    403
            ├── NotFoundError            404
            ├── ConflictError            409
            ├── PayloadTooLargeError     413
            ├── UnprocessableEntityError 422
            ├── RateLimitError           429
            └── InternalServerError      5xx

Status errors carry ``status_code``, the gateway's error ``code``, ``description``,
``request_id`` and the parsed ``body``. The API key is never part of any message.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AudioInputError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CacheError",
    "ConfigurationError",
    "ConflictError",
    "EngineModelError",
    "InternalServerError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PhaseoError",
    "RateLimitError",
    "ResponseTooLargeError",
    "UnknownModelError",
    "UnprocessableEntityError",
]


class PhaseoError(Exception):
    """Base class of every error raised on purpose by phaseo-notebook.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> issubclass(pn.RateLimitError, pn.PhaseoError)
    True
    """


class ConfigurationError(PhaseoError, ValueError):
    """A setting is missing or inconsistent (for example a remote model with no API key)."""


class CacheError(PhaseoError):
    """The cache directory cannot be created, read or written."""


class MissingExtraError(PhaseoError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` line.

    Also an ``ImportError``, so ``except ImportError`` around an optional feature catches it.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> issubclass(pn.MissingExtraError, pn.PhaseoError), issubclass(pn.MissingExtraError, ImportError)
    (True, True)
    """


class EngineModelError(PhaseoError, RuntimeError):
    """A local engine's model files are missing, unreadable, or fail their checksum.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> issubclass(pn.EngineModelError, pn.PhaseoError)
    True
    """


class AudioInputError(PhaseoError, ValueError):
    """An audio input is invalid; raised before any request is sent.

    Parameters
    ----------
    message
        What is wrong.
    audio
        A short, printable description of the offending input (never its bytes).

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> err = pn.AudioInputError("file does not exist", audio="'missing.wav'")
    >>> str(err)
    "audio input 'missing.wav': file does not exist"
    """

    def __init__(self, message: str, *, audio: str) -> None:
        self.reason = message
        self.audio = audio
        super().__init__(f"audio input {audio}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not in ``args``: rebuild through them, or the error could
        # not be unpickled (a Dask worker or a process pool sends it back pickled).
        return (functools.partial(type(self), audio=self.audio), (self.reason,), self.__dict__)


class APIError(PhaseoError):
    """A failure while talking to the gateway."""

    request_id: str | None = None


class APIConnectionError(APIError):
    """The gateway could not be reached or dropped the connection.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> str(pn.APIConnectionError("connection refused"))
    'connection refused'
    """

    def __init__(self, message: str = "could not connect to the gateway") -> None:
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    """The gateway did not answer in time."""

    def __init__(self, message: str = "the gateway did not answer in time") -> None:
        super().__init__(message)


class APIResponseError(APIError):
    """The gateway answered with a body that cannot be used (truncated, not JSON, no text).

    It is treated as transient: the same request usually succeeds when sent again.
    """

    def __init__(self, message: str, *, status_code: int, request_id: str | None = None) -> None:
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # As for AudioInputError: keyword-only arguments must survive pickling.
        rebuild = functools.partial(
            type(self), status_code=self.status_code, request_id=self.request_id
        )
        return (rebuild, self.args, self.__dict__)


class ResponseTooLargeError(APIResponseError):
    """The gateway's answer is larger than the client reads (see ``MAX_RESPONSE_BYTES``).

    Never retried: the same request would get the same answer. The client stops reading
    at the limit, so such an answer costs at most that much memory.
    """


class APIStatusError(APIError):
    """The gateway answered with an HTTP error status.

    Attributes
    ----------
    status_code
        The HTTP status.
    code
        The gateway's error code (``"key_limit_exceeded"``, ``"validation_error"``, ...) or None.
    description
        The gateway's human-readable description.
    request_id
        The gateway's request id, for support.
    body
        The parsed JSON body (a dict), or the raw text when it was not JSON.
    """

    def __init__(
        self,
        description: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.description = description
        self.request_id = request_id
        self.body = body
        label = f"{status_code} {code}" if code else str(status_code)
        message = f"gateway answered {label}: {description}"
        if request_id:
            message += f" (request id {request_id})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # As for AudioInputError: keyword-only arguments must survive pickling.
        rebuild = functools.partial(
            type(self),
            status_code=self.status_code,
            code=self.code,
            request_id=self.request_id,
            body=self.body,
        )
        return (rebuild, (self.description,), self.__dict__)


class BadRequestError(APIStatusError):
    """400: the gateway rejected the request (validation, unknown model, ...)."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PaymentRequiredError(APIStatusError):
    """402: the account has no funds or the model has no price."""


class PermissionDeniedError(APIStatusError):
    """403: the request was blocked (guardrail, region)."""


class NotFoundError(APIStatusError):
    """404: the endpoint does not exist at this base URL."""


class UnknownModelError(BadRequestError, NotFoundError):
    """The gateway does not serve the model: fatal for a run, as a bad key is.

    A 400 ``unsupported_model_or_endpoint`` (what the gateway answers), or a 404 whose code
    names a model (``model_not_found``, as OpenAI-style gateways answer). It is both a
    :class:`BadRequestError` and a :class:`NotFoundError`, so code catching either sees it.

    Attributes
    ----------
    available_models
        The models the gateway serves, when it says (in its error body or its catalog);
        empty when it does not.

    Examples
    --------
    >>> err = UnknownModelError("no such model", status_code=400, available_models=["a/b"])
    >>> err.available_models, "a/b" in str(err)
    (('a/b',), True)
    """

    def __init__(
        self,
        description: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        available_models: Sequence[str] = (),
    ) -> None:
        self.available_models: tuple[str, ...] = tuple(available_models)
        super().__init__(
            description, status_code=status_code, code=code, request_id=request_id, body=body
        )
        self._name_models()

    def with_available_models(self, models: Sequence[str]) -> UnknownModelError:
        """This error, naming ``models`` (taken from the gateway's catalog) in its message."""
        self.available_models = tuple(models)
        self._name_models()
        return self

    def _name_models(self) -> None:
        models = self.available_models
        if models and not all(m in self.description for m in models):
            self.args = (f"{self.args[0]}; the gateway serves: {', '.join(models)}",)

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(
            type(self),
            status_code=self.status_code,
            code=self.code,
            request_id=self.request_id,
            body=self.body,
            available_models=self.available_models,
        )
        return (rebuild, (self.description,), self.__dict__)


class ConflictError(APIStatusError):
    """409: the gateway is not ready; transient."""


class PayloadTooLargeError(APIStatusError):
    """413: the audio or the request body is over the gateway's limit."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was well-formed but could not be processed."""


class RateLimitError(APIStatusError):
    """429: too many requests; transient."""


class InternalServerError(APIStatusError):
    """5xx: the gateway or every provider behind it failed; transient."""


class BudgetExceededError(PhaseoError):
    """A request was not sent: its estimated cost would take the run over its budget.

    Rows a budgeted run did not send get ``text_error`` beginning ``BudgetExceededError:``;
    with ``errors="raise"`` this is raised once the finished rows are saved, so raising the
    budget and running again continues where the run stopped.

    Attributes
    ----------
    budget
        The run's budget, in ``currency``.
    spent
        What the run had spent when it stopped.
    currency
        The currency of both (``"USD"``).

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> err = pn.BudgetExceededError("budget of 0.5 USD reached", budget=0.5, spent=0.4998)
    >>> isinstance(err, pn.PhaseoError), err.spent
    (True, 0.4998)
    """

    def __init__(self, message: str, *, budget: float, spent: float, currency: str = "USD") -> None:
        self.budget = budget
        self.spent = spent
        self.currency = currency
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # As for AudioInputError: keyword-only arguments must survive pickling.
        rebuild = functools.partial(
            type(self), budget=self.budget, spent=self.spent, currency=self.currency
        )
        return (rebuild, self.args, self.__dict__)
