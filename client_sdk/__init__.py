"""Delineate's Python client: start download jobs and follow them live.

    from client_sdk import AsyncClient

    async with AsyncClient("http://127.0.0.1:3000") as client:
        job = await client.initiate([70000, 70007])
        async for frame in client.subscribe(job.job_id, raise_on_failure=True):
            ...

``Client`` is the synchronous twin. Frames are ``server.frames`` types.
"""

from client_sdk.backoff import Backoff
from client_sdk.client import AsyncClient, Job
from client_sdk.errors import (
    ConnectionFailed,
    DelineateError,
    HTTPError,
    JobFailed,
    JobNotFound,
    Timeout,
    Unauthorized,
)
from client_sdk.subscription import is_terminal
from client_sdk.sync import Client

__all__ = [
    "AsyncClient",
    "Backoff",
    "Client",
    "ConnectionFailed",
    "DelineateError",
    "HTTPError",
    "Job",
    "JobFailed",
    "JobNotFound",
    "Timeout",
    "Unauthorized",
    "is_terminal",
]
