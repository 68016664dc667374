"""Kafka's default key partitioning (Java client `Utils.murmur2` with its seed).

Results are keyed by uuid, so a result lands on the partition a Java producer would pick.
The hash comes from `murmurhash2` (a compiled extension, ~0.4 µs a key): aiokafka's
pure-Python murmur2 costs ~17 µs and a hand-tuned Python one ~6 µs, which made hashing the
largest single cost of publishing results. A property test checks it against aiokafka's.

Never: a partition other than the Java client's default partitioner would pick.
"""

from __future__ import annotations

from murmurhash2 import murmurhash2

_SEED = 0x9747B28C


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for `key`."""
    return (murmurhash2(key, _SEED) & 0x7FFFFFFF) % partitions
