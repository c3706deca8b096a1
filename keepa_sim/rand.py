"""Deterministic randomness: every simulated fact is a pure function of the seed and its inputs.

`mix64` is the SplitMix64 finaliser; `stream(...)` derives a 64-bit stream id from any ints;
`rng(...)` seeds a `random.Random` for one-off draws. Callers slice a mixed value into 16-bit
fields to get several uniform numbers from one hash.
"""

from __future__ import annotations

import random

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(value: int) -> int:
    value = (value + GOLDEN) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def stream(*parts: int) -> int:
    """A 64-bit id for a tuple of ints (seed, domain, product, purpose, ...)."""
    value = 0
    for part in parts:
        value = mix64(value ^ (part & MASK64))
    return value


def rng(*parts: int) -> random.Random:
    """A `random.Random` seeded from `parts` (for one-off draws such as product attributes)."""
    return random.Random(stream(*parts))
