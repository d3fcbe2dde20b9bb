"""A sans-IO network impairment shim for a media sender: drop packets with a given probability
and delay the rest by a uniform random extra delay, from a seeded RNG so that a demo or test
run is reproducible.

It stands in for a lossy, jittery radio link on loopback. Uniform delay U(0, J) between
consecutive packets gives an RFC 3550 §6.4.1 interarrival jitter estimate that converges to
E|U1 − U2| = J/3 (plus whatever the host's scheduler adds), and independent drops give a
cumulative loss close to the configured probability: both are what the receiver's own
statistics should report, which is how tests check the shim and the statistics together.
Large jitter reorders packets, as a real network with parallel paths does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from callward.errors import ConfigError

__all__ = ["Impairment", "ImpairmentShim"]

MAX_JITTER_MS = 1000.0


@dataclass(frozen=True, slots=True)
class Impairment:
    """``loss_pct``: probability in percent that a packet is dropped; ``jitter_ms``: upper
    bound of the uniform extra one-way delay of a packet that is sent."""

    loss_pct: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        if math.isnan(self.loss_pct) or not 0.0 <= self.loss_pct <= 100.0:
            raise ConfigError(f"loss {self.loss_pct}: expected a percentage in [0, 100]")
        if math.isnan(self.jitter_ms) or not 0.0 <= self.jitter_ms <= MAX_JITTER_MS:
            raise ConfigError(f"jitter {self.jitter_ms} ms: expected 0..{MAX_JITTER_MS:.0f} ms")


class ImpairmentShim:
    """Decides the fate of each packet a sender is about to transmit; the adapter acts on it."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self._rng = rng
        self.dropped = 0
        self.passed = 0

    @classmethod
    def seeded(cls, impairment: Impairment, seed: int, stream: str) -> ImpairmentShim:
        """One independent, reproducible RNG per (seed, stream): both directions of a call
        get different but repeatable loss patterns."""
        return cls(impairment, random.Random(f"{seed}:{stream}"))

    def decide(self) -> float | None:
        """None: drop this packet; otherwise the extra delay in seconds before sending it.

        Both draws happen for every packet, so the delay pattern does not depend on the loss
        setting (changing ``--loss`` keeps the jitter the same for a given seed)."""
        drop = self._rng.random() * 100.0 < self.impairment.loss_pct
        delay = self._rng.random() * self.impairment.jitter_ms / 1000.0
        if drop:
            self.dropped += 1
            return None
        self.passed += 1
        return delay
