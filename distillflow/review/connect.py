"""Connect to Argilla from ``ARGILLA_API_URL`` / ``ARGILLA_API_KEY``, turning failures into fixes.

    client = connect()                       # argilla.Argilla, or ConfigurationError naming the fix
    ds = find_dataset(client, "qa-review", "distillflow")

The key is only ever sent to the server: never printed, logged or written to a file.
"""

from __future__ import annotations

import os
import warnings

from distillflow.errors import ConfigurationError, MissingDependencyError

URL_ENV, KEY_ENV = "ARGILLA_API_URL", "ARGILLA_API_KEY"
_UP_HINT = "start a local one with `distillflow review up`, or point ARGILLA_API_URL at your server"


def credentials(api_url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    url = (api_url or os.environ.get(URL_ENV) or "").rstrip("/")
    key = api_key or os.environ.get(KEY_ENV) or ""
    missing = [name for name, v in ((URL_ENV, url), (KEY_ENV, key)) if not v]
    if missing:
        raise ConfigurationError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set — export "
            f"{URL_ENV}=http://127.0.0.1:6900 and {KEY_ENV}=<your Argilla API key> "
            f"({_UP_HINT}; `distillflow review up` prints both)"
        )
    return url, key


def probe(url: str, key: str, timeout: float = 10.0) -> dict:
    """Check the server answers and accepts the key; return the user (``GET /api/v1/me``)."""
    import httpx

    try:
        resp = httpx.get(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": key}, timeout=timeout)
    except httpx.TimeoutException:
        raise ConfigurationError(f"Argilla at {url} did not answer within {timeout:g}s — is it up? {_UP_HINT}") from None
    except httpx.HTTPError as e:
        reason = str(e) or type(e).__name__
        raise ConfigurationError(f"cannot reach Argilla at {url} ({reason}) — {_UP_HINT}") from None
    if resp.status_code == 401:
        raise ConfigurationError(
            f"Argilla at {url} rejected the API key in {KEY_ENV} (401 Unauthorized) — copy the key from "
            "Argilla's 'My settings' page (the local `distillflow review up` server uses argilla.apikey)"
        )
    if resp.status_code == 403:
        raise ConfigurationError(f"Argilla at {url}: the user of {KEY_ENV} may not do this (403) — use an owner or admin key")
    if resp.status_code >= 500:
        raise ConfigurationError(f"Argilla at {url} answered {resp.status_code} — check the server's log, then retry")
    try:
        me = resp.json()
    except ValueError:
        me = None
    if resp.status_code != 200 or not isinstance(me, dict) or "username" not in me:
        raise ConfigurationError(
            f"{url} does not look like an Argilla 2.x server (GET /api/v1/me answered {resp.status_code}) — "
            f"check {URL_ENV}: it is the server's base URL, e.g. http://127.0.0.1:6900"
        )
    return me


def connect(api_url: str | None = None, api_key: str | None = None):
    """An ``argilla.Argilla`` client, after checking the server and the key."""
    url, key = credentials(api_url, api_key)
    probe(url, key)
    try:
        import argilla as rg
    except ImportError:
        raise MissingDependencyError("argilla is not installed: pip install 'argilla==2.8.0'") from None
    return rg.Argilla(api_url=url, api_key=key, timeout=120)


def find_dataset(client, name: str, workspace: str):
    """The dataset, or None (without the SDK's 'not found' warnings)."""
    if find_workspace(client, workspace) is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.datasets(name, workspace=workspace)


def find_workspace(client, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return client.workspaces(name)


def dataset_url(client, dataset) -> str:
    return f"{client.api_url.rstrip('/')}/dataset/{dataset.id}/annotation-mode"


def api_error(e: Exception) -> tuple[int | None, str]:
    """``(status_code, detail)`` of an SDK or httpx error; status None for network errors."""
    status = getattr(e, "status_code", None)
    if status is None and getattr(e, "response", None) is not None:
        status = e.response.status_code
    return status, " ".join((str(e) or type(e).__name__).split())[:600]
