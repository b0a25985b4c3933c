"""The job API end to end: initiate, status, result, redirect, cancel, idempotency, bundles."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile

import httpx
import pytest

from delineate.storage import demo
from tests.conftest import ReplicaFactory
from tests.support.clients import AVAILABLE, UNAVAILABLE, initiate, wait_status, ws_collect
from tests.support.processes import Replica
from tests.support.services import Backend

pytestmark = pytest.mark.integration


async def test_initiate_answers_at_once_with_links(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """202 with jobId, queued status, count, every link, Location and Retry-After."""
    response = await http.post("/v1/download/initiate", json={"file_ids": [70000, 70000, 70007]})
    assert response.status_code == 202
    body = response.json()
    job_id = body["jobId"]
    assert uuid.UUID(job_id).version == 4
    assert body["status"] == "queued"
    assert body["totalFileIds"] == 2  # duplicates are folded
    assert body["statusUrl"] == f"{server.url}/v1/download/status/{job_id}"
    assert body["subscribeUrl"] == f"{server.ws_url}/v1/download/subscribe/{job_id}"
    assert body["streamUrl"] == f"{server.url}/v1/download/stream/{job_id}"
    assert body["resultUrl"] == f"{server.url}/v1/download/result/{job_id}"
    assert response.headers["location"] == body["statusUrl"]
    assert response.headers["retry-after"] == "2"


async def test_job_completes_and_bundle_holds_exactly_the_available_files(
    http: httpx.AsyncClient,
) -> None:
    """The signed link downloads a valid zip of the available files with the right bytes."""
    job = await initiate(http, [*AVAILABLE, UNAVAILABLE])
    done = await wait_status(http, job["jobId"], {"completed", "failed"})
    assert done["status"] == "completed"
    assert done["progress"] == 100.0
    assert done["filesDone"] == len(AVAILABLE)
    states = {f["fileId"]: (f["state"], f["available"]) for f in done["files"]}
    assert states[UNAVAILABLE] == ("unavailable", False)
    assert all(states[i] == ("done", True) for i in AVAILABLE)

    result = (await http.get(f"/v1/download/result/{job['jobId']}")).json()
    assert result["size"] == done["size"]
    download = await http.get(result["downloadUrl"])
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(f"{i}.zip" for i in AVAILABLE)
    for file_id in AVAILABLE:
        assert archive.read(f"{file_id}.zip") == demo.content(file_id)
    assert len(download.content) == result["size"]


async def test_redirect_points_at_the_bundle(http: httpx.AsyncClient) -> None:
    """GET /v1/download/{jobId} is 409 while running and a 302 to the bundle once done."""
    job = await initiate(http, [70000])
    early = await http.get(f"/v1/download/{job['jobId']}")
    assert early.status_code == 409
    await wait_status(http, job["jobId"], {"completed"})
    redirect = await http.get(f"/v1/download/{job['jobId']}")
    assert redirect.status_code == 302
    followed = await http.get(redirect.headers["location"])
    assert followed.status_code == 200
    assert followed.headers["content-type"] == "application/zip"


async def test_tampered_or_unsigned_links_are_403(
    http: httpx.AsyncClient, backend_kind: str
) -> None:
    """Changing the path, expiry or signature of a local link is refused (S3 links are
    presigned by S3, which enforces them)."""
    job = await initiate(http, [70000])
    await wait_status(http, job["jobId"], {"completed"})
    url = (await http.get(f"/v1/download/result/{job['jobId']}")).json()["downloadUrl"]
    if backend_kind != "memory":
        assert "X-Amz-Signature=" in url
        assert "X-Amz-Expires=900" in url
        return
    other = str(uuid.uuid4())
    for bad in (
        url.replace(job["jobId"], other),
        url.replace("expires=", "expires=9"),
        url[:-3] + "AAA",
        url.split("?")[0],
    ):
        response = await http.get(bad)
        assert response.status_code == 403, bad
        assert response.json()["error"] == "Forbidden"


async def test_result_before_completion_is_409_with_status(http: httpx.AsyncClient) -> None:
    """The result exists once the job is completed; before that the 409 says the status."""
    job = await initiate(http, [70000])
    response = await http.get(f"/v1/download/result/{job['jobId']}")
    assert response.status_code == 409
    assert response.json()["status"] in {"queued", "processing"}


async def test_job_of_only_missing_files_fails(http: httpx.AsyncClient) -> None:
    """With no available file the job fails with a clear error code."""
    job = await initiate(http, [UNAVAILABLE, 10001])
    done = await wait_status(http, job["jobId"], {"completed", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["code"] == "no_files_available"


async def test_unknown_and_malformed_job_ids(http: httpx.AsyncClient) -> None:
    """An unknown job is 404; a malformed id is 400, on every job route."""
    unknown = str(uuid.uuid4())
    for path in ("status", "result"):
        assert (await http.get(f"/v1/download/{path}/{unknown}")).status_code == 404
        assert (await http.get(f"/v1/download/{path}/not-a-job")).status_code == 400
    assert (await http.post(f"/v1/download/cancel/{unknown}")).status_code == 404
    assert (await http.post("/v1/download/cancel/..%2F..%2Fetc")).status_code in (400, 404)
    assert (await http.get(f"/v1/download/{unknown}")).status_code == 404
    assert (await http.get(f"/v1/download/stream/{unknown}")).status_code == 404


async def test_cancel_mid_job_stops_it_and_removes_output(
    replica_factory: ReplicaFactory, backend: Backend
) -> None:
    """Cancel stops a running job promptly, leaves no bundle, and is idempotent."""
    replica = replica_factory(DOWNLOAD_DELAY_MIN_MS="20000", DOWNLOAD_DELAY_MAX_MS="20000")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        job = await initiate(client, AVAILABLE)
        running = await wait_status(client, job["jobId"], {"processing"})
        assert running["status"] == "processing"
        await asyncio.sleep(0.3)
        cancelled = await client.post(f"/v1/download/cancel/{job['jobId']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        again = await client.post(f"/v1/download/cancel/{job['jobId']}")
        assert again.json()["status"] == "cancelled"
        status = (await client.get(f"/v1/download/status/{job['jobId']}")).json()
    assert status["status"] == "cancelled"
    assert status["progress"] < 100
    assert backend.bundle_keys() == []


async def test_cancel_of_a_queued_job_and_of_a_finished_one(
    replica_factory: ReplicaFactory,
) -> None:
    """A queued job is cancelled without running; a completed job cannot be cancelled (409)."""
    replica = replica_factory(
        JOB_CONCURRENCY="1", DOWNLOAD_DELAY_MIN_MS="1500", DOWNLOAD_DELAY_MAX_MS="1500"
    )
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        jobs = [(await initiate(client, [file_id]))["jobId"] for file_id in (70000, 70007)]

        async def statuses() -> list[str]:
            return [(await client.get(f"/v1/download/status/{j}")).json()["status"] for j in jobs]

        # Either may run first: on a Cluster the queue is partitioned, with no order across
        # partitions.
        async with asyncio.timeout(20):
            while "processing" not in (found := await statuses()):  # noqa: ASYNC110 (the server's state)
                await asyncio.sleep(0.05)
        running = jobs[found.index("processing")]
        waiting = next(j for j in jobs if j != running)
        assert sorted(found) == ["processing", "queued"]  # concurrency 1: one waits its turn
        cancelled = (await client.post(f"/v1/download/cancel/{waiting}")).json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["startedAt"] is None
        await wait_status(client, running, {"completed"})
        late = await client.post(f"/v1/download/cancel/{running}")
    assert late.status_code == 409
    assert late.json()["status"] == "completed"


async def test_idempotency_key_returns_the_same_job(http: httpx.AsyncClient) -> None:
    """Same key and body: the same job; same key, another body: 409."""
    key = f"test-{uuid.uuid4()}"
    first = await http.post(
        "/v1/download/initiate", json={"file_ids": [70000]}, headers={"Idempotency-Key": key}
    )
    retry = await http.post(
        "/v1/download/initiate", json={"file_ids": [70000]}, headers={"Idempotency-Key": key}
    )
    other = await http.post(
        "/v1/download/initiate", json={"file_ids": [70007]}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == retry.status_code == 202
    assert retry.json()["jobId"] == first.json()["jobId"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    bad = await http.post(
        "/v1/download/initiate", json={"file_ids": [70000]}, headers={"Idempotency-Key": "a b"}
    )
    assert bad.status_code == 400


async def test_job_keeps_running_when_every_client_leaves(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """A watcher that hangs up mid-job does not stop the job."""
    job = await initiate(http, [70000, 70007])
    partial = await ws_collect(f"{server.ws_url}/v1/download/subscribe/{job['jobId']}", limit=2)
    assert partial.frames[0]["type"] == "snapshot"
    done = await wait_status(http, job["jobId"], {"completed", "failed"})
    assert done["status"] == "completed"
