"""The local gateway: the speech-to-text API served offline, and the project's test double.

- :class:`LocalGateway` runs a real HTTP server on 127.0.0.1 (in a thread, or a
  subprocess with ``process=True``); ``phaseo-notebook serve`` runs the same server.
- :class:`EmbeddedTransport` answers the same requests in-process, with no socket.
- :class:`Faults` injects latency, errors, drops, slow and broken answers;
  :class:`GatewayStats` is what a test reads back.

Both front ends share one request -> response core (``_app``), so the JSON, the error
codes and the validation are identical wherever a request is answered.
"""

from __future__ import annotations

from phaseo_notebook._gateway._app import DEFAULT_MODELS, MODES, Mode
from phaseo_notebook._gateway._embedded import EmbeddedTransport
from phaseo_notebook._gateway._faults import Faults
from phaseo_notebook._gateway._local import LocalGateway
from phaseo_notebook._gateway._stats import GatewayStats

__all__ = [
    "DEFAULT_MODELS",
    "MODES",
    "EmbeddedTransport",
    "Faults",
    "GatewayStats",
    "LocalGateway",
    "Mode",
]
