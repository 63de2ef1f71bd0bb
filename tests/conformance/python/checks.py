"""What the conformance scripts (conformance.py, schemas.py) share: a failed check, waiting for a
condition, required environment, and a run bounded in time as a whole."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any, Awaitable, Callable


class CheckFailed(AssertionError):
    pass


def program() -> str:
    return os.path.basename(sys.argv[0])


def check(cond: Any, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        print(f"{program()}: environment variable {name} is required", file=sys.stderr)
        sys.exit(2)
    return value


async def until(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


def run_capped(checks: Callable[[], Awaitable[int]], cap_s: int) -> int:
    """Run `checks` for at most `cap_s` seconds; 10 s later the process ends whatever it is doing."""

    def hard_cap(*_: Any) -> None:
        print(f"{program()}: overall cap of {cap_s + 10} s exceeded", file=sys.stderr, flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, hard_cap)
    signal.alarm(cap_s + 10)
    try:
        return asyncio.run(asyncio.wait_for(checks(), cap_s))
    except asyncio.TimeoutError:
        print(f"{program()}: overall cap of {cap_s} s exceeded", file=sys.stderr)
        return 1
