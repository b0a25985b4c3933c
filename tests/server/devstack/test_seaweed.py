"""The SeaweedFS the stack and the tests start."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.services import SeaweedS3, s3_client

pytestmark = pytest.mark.integration


def test_holds_a_suites_worth_of_buckets(s3_server: SeaweedS3) -> None:
    """Every bucket is a collection with its own volumes: 100 of them still take writes (by
    default weed allows free disk / 1 GiB volumes, which ran out late in the full suite)."""
    client = s3_client(s3_server)
    run = uuid.uuid4().hex[:8]

    def fill(n: int) -> bytes:
        bucket = f"many-{run}-{n}"
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="k", Body=b"%d" % n)
        body: bytes = client.get_object(Bucket=bucket, Key="k")["Body"].read()
        return body

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(fill, range(100)))
    assert bodies == [b"%d" % n for n in range(100)]
