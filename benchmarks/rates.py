"""Request rates of one server: the read path (a single-resource GET) against ``/healthz``.

``/healthz`` answers without authentication, database or JSON work: its rate is the ceiling of
the HTTP stack in that process, measured in the same run. A management GET of one cache rule adds
the token check, the registry and rule lookup and the model's JSON; the ratio of the two rates
says what the read path costs above that floor (target: at least 0.25).

The load comes from ``wrk -t2 -c16`` when ``wrk`` is installed (Debian's ``wrk``), else from a
Python load generator (aiohttp, 16 connections), which is slower than the server and so
understates both rates; the report says which was used. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from typing import Any

CONNECTIONS = 16


def measure(url: str, headers: dict[str, str], seconds: float) -> tuple[float, str]:
    """Requests per second answered 200 for ``url``, and the tool that measured it."""
    if shutil.which("wrk"):
        args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"wrk saw non-2xx answers from {url}:\n{out}")
        match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(match.group(1)), "wrk -t2 -c16"
    return asyncio.run(_python_load(url, headers, seconds)), "python aiohttp, 16 connections"


async def _python_load(url: str, headers: dict[str, str], seconds: float) -> float:
    import aiohttp

    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
                done += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
        return done / (time.perf_counter() - started)


def read_path_rates(
    base_url: str, token: str, resource_path: str, seconds: float
) -> dict[str, Any]:
    """The ``/healthz`` rate, the GET rate of ``resource_path`` and their ratio, one run."""
    auth = {"Authorization": f"Bearer {token}"}
    healthz, tool = measure(f"{base_url}/healthz", {}, seconds)
    get, _ = measure(f"{base_url}{resource_path}", auth, seconds)
    return {"healthz_rps": healthz, "get_rps": get, "ratio": get / healthz, "tool": tool}
