"""Delineate's Python client: start download jobs and follow them live.

    from delineate_client import AsyncClient

    async with AsyncClient("http://127.0.0.1:3000", token=os.environ["DELINEATE_TOKEN"]) as c:
        job = await c.initiate([70000, 70007])
        async for frame in c.subscribe(job.job_id, raise_on_failure=True):
            ...

``Client`` is the synchronous twin. Frames are ``delineate_protocol`` types; the whole guide
is docs/client.md.
"""

from importlib.metadata import version

from delineate_client.auth import TokenSource
from delineate_client.backoff import Backoff
from delineate_client.client import AsyncClient, Job
from delineate_client.errors import (
    ConnectionFailed,
    DelineateError,
    HTTPError,
    JobFailed,
    JobNotFound,
    Timeout,
    Unauthorized,
)
from delineate_client.state import ConnectionState, StateChange
from delineate_client.subscription import is_terminal
from delineate_client.sync import Client

__version__ = version("delineate-client")

__all__ = [
    "AsyncClient",
    "Backoff",
    "Client",
    "ConnectionFailed",
    "ConnectionState",
    "DelineateError",
    "HTTPError",
    "Job",
    "JobFailed",
    "JobNotFound",
    "StateChange",
    "Timeout",
    "TokenSource",
    "Unauthorized",
    "is_terminal",
]
