"""The fast partitioner agrees with aiokafka's (the Java client's) on any key."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from streamstop.core.partition import partition_for_key


@given(st.binary(max_size=200), st.integers(1, 1000))
def test_any_key_lands_where_a_java_producer_puts_it(key: bytes, partitions: int) -> None:
    assert partition_for_key(key, partitions) == (reference(key) & 0x7FFFFFFF) % partitions


@given(st.uuids().map(lambda u: str(u).encode()), st.integers(1, 1000))
def test_uuid_keys_land_where_a_java_producer_puts_them(key: bytes, partitions: int) -> None:
    assert partition_for_key(key, partitions) == (reference(key) & 0x7FFFFFFF) % partitions


def test_known_vector() -> None:
    # Kafka's own test vector: Utils.murmur2("21".getBytes()) == -973932308.
    assert partition_for_key(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)
