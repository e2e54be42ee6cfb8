"""Warnings for the operator about pulls that fail on the operator's side, rate-limited.

A failure a client cannot fix (the upstream unreachable or failing, a credential set that does
not log in, a secret that cannot be read) is answered to the client with a short OCI error; the
operator learns the details from one WARNING line per (cache rule, kind of failure) and
``interval``. Lines never carry a secret value: they name the rule, the upstream and the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["OperatorLog"]


@dataclass
class _Quiet:
    until: float
    suppressed: int = 0


class OperatorLog:
    """WARNING lines at most once per ``interval`` seconds per key; the lines left out in
    between are counted, and the next line of that key says how many.

    Keys are (cache rule name, kind); kinds are a few fixed strings. The state holds one entry
    per key seen, dropped once quiet for an interval when it grows past ``max_keys``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[tuple[str, str], _Quiet] = {}

    def warning(self, rule: str, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless (``rule``, ``kind``) was logged within the interval;
        return whether it was logged."""
        now = self._clock()
        key = (rule, kind)
        state = self._keys.get(key)
        if state is not None and now < state.until:
            state.suppressed += 1
            return False
        suppressed = state.suppressed if state is not None else 0
        if len(self._keys) >= self._max_keys:
            self._keys = {k: v for k, v in self._keys.items() if now < v.until}
        self._keys[key] = _Quiet(now + self.interval)
        if suppressed:
            message += " (and %d like it since the last such line)"
            args = (*args, suppressed)
        self.logger.warning(message, *args)
        return True
