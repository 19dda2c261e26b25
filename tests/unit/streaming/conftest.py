"""Every sans-I/O case runs twice: the input fed whole, then one byte at a time."""

from __future__ import annotations

import pytest
from sansio_feed import Feed, feed_bytewise, feed_whole


@pytest.fixture(params=[feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def feed(request: pytest.FixtureRequest) -> Feed:
    return request.param  # type: ignore[no-any-return]
