"""Signed download links: the signature covers path and expiry; expired links are refused."""

import pytest

from delineate.errors import Forbidden
from delineate.storage import signing

SECRET = "s3cret"
PATH = "/v1/files/exports/x.zip"


def test_valid_link_passes() -> None:
    """A fresh signature over the same path and expiry verifies."""
    sig = signing.signature(SECRET, PATH, 2000)
    signing.verify(SECRET, PATH, "2000", sig, now=1000)


@pytest.mark.parametrize(
    ("path", "expires", "secret"),
    [
        ("/v1/files/exports/y.zip", "2000", SECRET),  # another object
        (PATH, "2001", SECRET),  # a later expiry
        (PATH, "2000", "other"),  # another server's key
    ],
)
def test_tampered_link_is_refused(path: str, expires: str, secret: str) -> None:
    """Changing any signed part invalidates the link."""
    sig = signing.signature(SECRET, PATH, 2000)
    with pytest.raises(Forbidden, match="signature"):
        signing.verify(secret, path, expires, sig, now=1000)


def test_expired_link_is_refused() -> None:
    """A correctly signed link past its expiry is refused."""
    sig = signing.signature(SECRET, PATH, 2000)
    with pytest.raises(Forbidden, match="expired"):
        signing.verify(SECRET, PATH, "2000", sig, now=2001)


@pytest.mark.parametrize("expires", ["", "abc", "-5", "1" * 20])
def test_malformed_expiry_is_refused(expires: str) -> None:
    """Only a plain number of seconds is accepted."""
    with pytest.raises(Forbidden, match="malformed"):
        signing.verify(SECRET, PATH, expires, "x", now=0)
