"""`embalance serve`: MLflow's scoring app behind a request guard (size limit, body timeout, input checks), N workers.

``checks`` is pure (what a request may hold), ``guard`` the ASGI middleware, ``app`` the model, workers and uvicorn.
Not part of the shipped model: the model itself needs only ``embalance.serving.predict``. (This package is not
under ``serving/`` on purpose: that folder is a dependency of the DVC stage ``export``.)
"""

from __future__ import annotations

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # 4 MiB: thousands of reviews in one request; a 20 MB body is refused
DEFAULT_BODY_TIMEOUT = 10.0  # seconds for a request's whole body to arrive after its headers
