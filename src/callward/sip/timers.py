"""RFC 3261 transaction timers as values (§17, Table 4 in Appendix A; RFC 6026 §8.11).

Timers are deadlines, never sleeps: a transaction stores ``{Timer: deadline}`` and the adapter
asks for the earliest one (``get_timer()``) and calls ``handle_timer(now)`` when it is due.

Appendix A durations (``unreliable`` / ``reliable`` transport):

====== ==================================== ====================================
Timer  Meaning                              Value
====== ==================================== ====================================
A      INVITE request retransmit            T1, doubling (unreliable only)
B      INVITE transaction timeout           64*T1
C      proxy INVITE timeout                 > 3 min (proxy's business, not here)
D      wait for response retransmits        >= 32 s unreliable, 0 reliable
E      non-INVITE request retransmit        T1, doubling up to T2 (unreliable only)
F      non-INVITE transaction timeout       64*T1
G      INVITE response retransmit           T1, doubling up to T2 (unreliable only)
H      wait for ACK receipt                 64*T1
I      wait for ACK retransmits             T4 unreliable, 0 reliable
J      wait for non-INVITE retransmits      64*T1 unreliable, 0 reliable
K      wait for response retransmits        T4 unreliable, 0 reliable
L      (RFC 6026) INVITE server Accepted    64*T1
M      (RFC 6026) INVITE client Accepted    64*T1
====== ==================================== ====================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Timer", "TimerConfig"]


class Timer(enum.Enum):
    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"


# Timeouts that end a transaction win over a retransmission timer due at the same instant,
# so a retransmission is never sent in the same tick the transaction gives up.
TIMER_PRIORITY: dict[Timer, int] = {
    t: (0 if t in (Timer.B, Timer.F, Timer.H) else 1) for t in Timer
}


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max time a message
    stays in the network), in seconds (§17.1.1.1, §17.1.2.2). ``timer_d`` is the unreliable
    value of Timer D ("at least 32 seconds", §17.1.1.2)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0 and self.timer_d >= 0):
            raise ValueError("timers need T1 > 0, T2 >= T1, T4 > 0, Timer D >= 0")

    def initial(self, timer: Timer, reliable: bool) -> float:
        """The first duration of ``timer`` (Appendix A)."""
        t1, t4 = self.t1, self.t4
        match timer:
            case Timer.A | Timer.E | Timer.G:
                return t1
            case Timer.B | Timer.F | Timer.H | Timer.L | Timer.M:
                return 64 * t1
            case Timer.D:
                return 0.0 if reliable else self.timer_d
            case Timer.I | Timer.K:
                return 0.0 if reliable else t4
            case Timer.J:
                return 0.0 if reliable else 64 * t1
        raise ValueError(timer)  # pragma: no cover - exhaustive

    def next_interval(self, timer: Timer, previous: float, *, proceeding: bool = False) -> float:
        """Interval after a retransmission timer fired: A doubles without bound (§17.1.1.2);
        E and G double up to T2 (§17.1.2.2, §17.2.1); E in Proceeding is T2."""
        if timer is Timer.A:
            return previous * 2
        if timer is Timer.E and proceeding:
            return self.t2
        return min(previous * 2, self.t2)
