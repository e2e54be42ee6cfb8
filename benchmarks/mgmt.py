"""Management-API benchmark: the genuine ``azure-mgmt-containerregistry`` SDK against a real server.

Run from the repository root::

    .venv/bin/python -m benchmarks.mgmt                       # SQLite, 1000 rules vs 10
    .venv/bin/python -m benchmarks.mgmt --database postgresql --json /tmp/mgmt.json

It starts its own ``entrepot serve`` on a free 127.0.0.1 port in a temporary data dir (and, for
``--database postgresql``, a scratch database that is dropped afterwards), then for a registry
with ``--rules`` cache rules and for another with ``--small`` rules (the small registry's cycle
is repeated ``--small-rounds`` times, default 10, so that its percentiles rest on 100 samples
rather than 10):

1. creates the rules (``begin_create(...).result()``), alternating static
   ``docker.io/library/app{i} -> app{i}`` and wildcard ``quay.io/org{i}/* -> q/org{i}/*``;
2. lists them all, ``--list-repeats`` times per round, counting pages;
3. gets each one;
4. GETs one rule with plain ``requests`` (no SDK), ``--raw-requests`` times in all;
5. deletes each one (``begin_delete(...).result()``).

and prints operations/second and p50/p99 latency per phase, then the big/small ratio of the p50s.

Creates and deletes are long-running operations, run one after the other: the SDK sends the
PUT/DELETE, polls the ``Azure-AsyncOperation``/``Location`` URL at once, and sleeps the server's
``Retry-After`` (its default, 1 s, set explicitly with ``ENTREPOT_ARM_RETRY_AFTER=1``) before any
further poll; a create ends with a GET of the rule. The server finishes fast operations before
answering, so one status poll normally suffices; an operation that needs a second one costs at
least 1 s more, and the benchmark reports how many did. The "initial PUT/DELETE" row is the
server's own cost of the change; the "LRO, to result" row is what an SDK user waits for.

Only 127.0.0.1 is contacted. Nothing here depends on pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from benchmarks.rates import read_path_rates

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "bench-rg"
BIG_REGISTRY = "bench-big"
SMALL_REGISTRY = "bench-small"
API_VERSION = "2025-11-01"  # the genuine SDK 15.x default
RETRY_AFTER = "1"  # the server default; not tuned
SDK_POLLING_INTERVAL = 0.05  # used only when the server sends no Retry-After
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP = 20


# -- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(port: int, data_dir: Path, database_url: str, max_rules: int) -> str:
    database = f'\n[database]\nurl = "{database_url}"\n' if database_url else ""
    registries = "".join(
        f'\n[[registries]]\nsubscription = "{SUBSCRIPTION}"\n'
        f'resource_group = "{RESOURCE_GROUP}"\nname = "{name}"\n'
        for name in (BIG_REGISTRY, SMALL_REGISTRY)
    )
    arm = f"\n[arm]\nmax_rules_per_registry = {max_rules}\n" if max_rules > 1000 else ""
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{data_dir}"\n'
        f"{database}{arm}{registries}"
    )


@dataclass
class Server:
    """One ``python -m entrepot serve`` child process."""

    root: Path
    database_url: str
    max_rules: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / "entrepot.toml"
        config.write_text(
            server_config(self.port, self.data_dir, self.database_url, self.max_rules)
        )
        # Only our settings: no ENTREPOT_* from the caller's shell may change the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
        env["ENTREPOT_ARM_RETRY_AFTER"] = RETRY_AFTER
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entrepot", "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"entrepot serve exited early:\n{self.log_tail()}")
            with suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"entrepot serve did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def rule_path(self, registry: str, rule: str) -> str:
        return (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
            f"/providers/Microsoft.ContainerRegistry/registries/{registry}/cacheRules/{rule}"
        )


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``admin_url``, dropped afterwards."""
    import asyncpg

    name = f"entrepot_bench_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    parts = urlsplit(admin_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--postgres-url must point at 127.0.0.1, got {parts.hostname!r}")
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- the genuine SDK -----------------------------------------------------------------------------
class RequestCounter:
    """Counts the SDK's HTTP requests (thread-safe); status polls are counted per operation URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_kind: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()

    def hook(self, request: Any) -> None:
        http = request.http_request
        path = urlsplit(http.url).path
        low = path.lower()
        with self.lock:
            if "/operationstatuses/" in low or "/operationresults/" in low:
                self.polls[path] += 1
                self.by_kind["status poll"] += 1
            else:
                self.by_kind[http.method] += 1

    def reset(self) -> None:
        with self.lock:
            self.by_kind.clear()
            self.polls.clear()

    def snapshot(self) -> tuple[dict[str, int], list[int]]:
        with self.lock:
            return dict(self.by_kind), list(self.polls.values())


def genuine_sdk_client(url: str, token: str, counter: RequestCounter) -> Any:
    """The genuine SDK with the loopback recipe of tests/conftest.py (plain http allowed).

    Default transport (requests) and policies; ``retry_total=0`` so a failure is not hidden by
    retries, and a request hook that only counts.
    """
    from azure.core.credentials import AccessToken
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

    class StaticToken:
        def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
            return AccessToken(token, int(time.time()) + 3600)

    class LoopbackPolicy(ARMChallengeAuthenticationPolicy):  # type: ignore[misc]
        def on_request(self, request: Any) -> None:
            request.context["enforce_https"] = False
            super().on_request(request)

    credential = StaticToken()
    return ContainerRegistryManagementClient(
        credential,
        SUBSCRIPTION,
        base_url=url,
        authentication_policy=LoopbackPolicy(credential, "https://management.azure.com/.default"),
        polling_interval=SDK_POLLING_INTERVAL,
        retry_total=0,
        raw_request_hook=counter.hook,
    )


def rule_spec(i: int) -> tuple[str, str, str]:
    """``(name, source, target)`` of rule ``i``: static and wildcard alternately, none overlap."""
    name = f"rule-{i:06d}"
    if i % 2 == 0:
        return name, f"docker.io/library/app{i}", f"app{i}"
    return name, f"quay.io/org{i}/*", f"q/org{i}/*"


# -- statistics ----------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Phase:
    name: str
    latencies: list[float]  # seconds, one per operation
    wall: float  # seconds for the whole phase
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """Counts, rates and percentiles; ``None`` (JSON ``null``) where not applicable."""
        ops = len(self.latencies)
        return {
            "phase": self.name,
            "n": len(self.latencies),
            "ops_per_s": ops / self.wall if self.wall > 0 else None,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "wall_s": None if math.isnan(self.wall) else self.wall,
            "note": self.note,
        }


# -- the phases ----------------------------------------------------------------------------------
@dataclass
class LroResult:
    initial: list[float]  # seconds to the answer of the PUT/DELETE
    total: list[float]  # seconds to the result of the LRO
    wall: float
    requests: dict[str, int]  # HTTP requests the SDK made, by method ("status poll" apart)
    polls: list[int]  # status polls of each operation


def run_lros(
    label: str, names: list[str], begin: Callable[[str], Any], counter: RequestCounter
) -> LroResult:
    """``begin(name).result()`` for each name in turn, timing the initial call and the whole."""
    counter.reset()
    initial: list[float] = []
    total: list[float] = []
    phase_start = time.perf_counter()
    for name in names:
        start = time.perf_counter()
        poller = begin(name)
        initial.append(time.perf_counter() - start)
        poller.result(timeout=120)
        total.append(time.perf_counter() - start)
        if not poller.done():
            raise RuntimeError(f"{label} {name}: the LRO did not finish within 120 s")
        if poller.status().lower() != "succeeded":
            raise RuntimeError(f"{label} {name}: the LRO ended {poller.status()!r}")
    wall = time.perf_counter() - phase_start
    requests_by_kind, polls = counter.snapshot()
    return LroResult(initial, total, wall, requests_by_kind, polls)


def run_registry(
    server: Server,
    client: Any,
    counter: RequestCounter,
    registry: str,
    count: int,
    rounds: int,
    list_repeats: int,
    raw_requests: int,
) -> dict[str, Any]:
    """Create, list, get, raw-GET and delete ``count`` rules in ``registry``, ``rounds`` times."""
    from azure.mgmt.containerregistry.models import CacheRule, CacheRuleProperties

    rules = client.cache_rules
    specs = {name: (source, target) for name, source, target in map(rule_spec, range(count))}

    def begin_create(name: str) -> Any:
        source, target = specs[name]
        body = CacheRule(
            properties=CacheRuleProperties(source_repository=source, target_repository=target)
        )
        return rules.begin_create(RESOURCE_GROUP, registry, name, body)

    def begin_delete(name: str) -> Any:
        return rules.begin_delete(RESOURCE_GROUP, registry, name)

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.token}"

    # Warm-up (not measured): one rule through every call, plus raw GETs.
    warm = "warmup-rule"
    specs[warm] = ("docker.io/library/warmup", "warmup")
    begin_create(warm).result()
    for _ in range(WARMUP):
        rules.get(RESOURCE_GROUP, registry, warm)
        session.get(f"{server.url}{server.rule_path(registry, warm)}?api-version={API_VERSION}")
    list(rules.list(RESOURCE_GROUP, registry))
    begin_delete(warm).result()
    del specs[warm]

    names = sorted(specs)
    one = names[len(names) // 2]
    raw_url = f"{server.url}{server.rule_path(registry, one)}?api-version={API_VERSION}"
    raw_per_round = [
        raw_requests // rounds + (1 if r < raw_requests % rounds else 0) for r in range(rounds)
    ]
    lat: dict[str, list[float]] = {
        k: [] for k in ("put", "create", "page", "item", "get", "raw", "delete_initial", "delete")
    }
    wall: Counter[str] = Counter()
    lro: dict[str, Counter[str]] = {"create": Counter(), "delete": Counter()}
    polls: dict[str, list[int]] = {"create": [], "delete": []}
    pages_per_list = 0
    deciles: dict[str, tuple[float, float]] = {}

    def first_last_decile(values: list[float]) -> tuple[float, float]:
        tenth = max(1, len(values) // 10)
        return percentile(values[:tenth], 50) * 1000, percentile(values[-tenth:], 50) * 1000

    for round_no in range(rounds):
        # 1. create
        created = run_lros("create", names, begin_create, counter)
        lat["put"] += created.initial
        lat["create"] += created.total
        wall["create"] += created.wall
        lro["create"].update(created.requests)
        polls["create"] += created.polls
        if round_no == 0:
            deciles["create (initial PUT)"] = first_last_decile(created.initial)

        # 2. list (all pages), several times
        listed: list[str] = []
        start = time.perf_counter()
        for repeat in range(list_repeats):
            pages = rules.list(RESOURCE_GROUP, registry).by_page()
            npages = 0
            while True:
                t0 = time.perf_counter()
                try:
                    page = list(next(pages))
                except StopIteration:
                    break
                elapsed = time.perf_counter() - t0
                npages += 1
                lat["page"].append(elapsed)
                lat["item"] += [elapsed / len(page)] * len(page)
                if repeat == 0:
                    listed.extend(r.name for r in page)
            pages_per_list = npages
        wall["list"] += time.perf_counter() - start
        if sorted(listed) != names:
            raise RuntimeError(f"list returned {len(listed)} rules, expected {len(names)}")

        # 3. get each
        start = time.perf_counter()
        for name in names:
            t0 = time.perf_counter()
            rule = rules.get(RESOURCE_GROUP, registry, name)
            lat["get"].append(time.perf_counter() - t0)
            if rule.properties.target_repository != specs[name][1]:
                raise RuntimeError(f"get {name}: got {rule.properties.target_repository!r}")
        wall["get"] += time.perf_counter() - start

        # 4. raw HTTP GET of one rule (the middle one), no SDK
        start = time.perf_counter()
        for _ in range(raw_per_round[round_no]):
            t0 = time.perf_counter()
            response = session.get(raw_url, timeout=30)
            response.json()
            lat["raw"].append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"GET {raw_url}: {response.status_code} {response.text[:200]}")
        wall["raw"] += time.perf_counter() - start

        # 5. delete each
        deleted = run_lros("delete", names, begin_delete, counter)
        lat["delete_initial"] += deleted.initial
        lat["delete"] += deleted.total
        wall["delete"] += deleted.wall
        lro["delete"].update(deleted.requests)
        polls["delete"] += deleted.polls
        if round_no == 0:
            deciles["delete (initial DELETE)"] = first_last_decile(deleted.initial)
        remaining = list(rules.list(RESOURCE_GROUP, registry))
        if remaining:
            raise RuntimeError(f"{len(remaining)} rules left after deleting them all")
    session.close()

    see_lro = "ops/s: see the LRO row"
    phases = [
        Phase("create (initial PUT)", lat["put"], math.nan, note=see_lro),
        Phase("create (LRO, to result)", lat["create"], wall["create"]),
        Phase(
            "list (one page)",
            lat["page"],
            wall["list"],
            note=f"{pages_per_list} page(s) per full list",
        ),
        Phase("list (per item)", lat["item"], wall["list"], note="page latency / items in page"),
        Phase("get (SDK)", lat["get"], wall["get"]),
        Phase("get (raw HTTP, 1 rule)", lat["raw"], wall["raw"], note=f"no SDK; {one}"),
        Phase("delete (initial DELETE)", lat["delete_initial"], math.nan, note=see_lro),
        Phase("delete (LRO, to result)", lat["delete"], wall["delete"]),
    ]

    def lro_info(kind: str) -> dict[str, Any]:
        counts = polls[kind]
        return {
            "operations": len(names) * rounds,
            "http_requests": dict(lro[kind]),
            "status_polls": sum(counts),
            "operations_polled": len(counts),
            "max_polls_per_operation": max(counts, default=0),
            "operations_with_more_than_one_poll": sum(1 for p in counts if p > 1),
        }

    return {
        "registry": registry,
        "rules": count,
        "rounds": rounds,
        "phases": [p.summary() for p in phases],
        "create_lro": lro_info("create"),
        "delete_lro": lro_info("delete"),
        "pages_per_list": pages_per_list,
        # p50 (ms) of the first and of the last tenth of the first round's creates and deletes
        "p50_first_last_tenth_ms": deciles,
    }


# -- output --------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def phase_table(result: dict[str, Any]) -> str:
    head = f"{'phase':<26} {'n':>6} {'ops/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'wall s':>8}  note"
    lines = [head, "-" * len(head)]
    for p in result["phases"]:
        p99 = fmt(p["p99_ms"]) + ("*" if p["n"] < 100 else " ")
        lines.append(
            f"{p['phase']:<26} {p['n']:>6} {fmt(p['ops_per_s'], 1):>9} {fmt(p['p50_ms']):>9} "
            f"{p99:>10} {fmt(p['wall_s']):>7}  {p['note']}"
        )
    if result["rules"] >= 20:
        for phase, (first, last) in result["p50_first_last_tenth_ms"].items():
            tenth = result["rules"] // 10
            present = (
                f"0-{tenth - 1} vs {result['rules'] - tenth}-{result['rules'] - 1} rules present"
                if phase.startswith("create")
                else f"{result['rules']}-{result['rules'] - tenth + 1} vs {tenth}-1 rules present"
            )
            lines.append(
                f"{phase} p50, first vs last {tenth} ({present}): {first:.2f} vs {last:.2f} ms"
            )
    for key in ("create_lro", "delete_lro"):
        info = result[key]
        per_op = {k: v / info["operations"] for k, v in sorted(info["http_requests"].items())}
        lines.append(
            f"{key.split('_')[0]}: {info['operations']} LROs, {info['status_polls']} status polls; "
            f"{info['operations_with_more_than_one_poll']} needed more than one poll "
            f"(max {info['max_polls_per_operation']})\n"
            "  HTTP requests per operation: " + ", ".join(f"{k} {v:.2f}" for k, v in per_op.items())
        )
    return "\n".join(lines)


def ratio_table(big: dict[str, Any], small: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    head = f"{'phase':<26} {'p50 big ms':>11} {'p50 small ms':>13} {'big/small':>10}"
    lines = [head, "-" * len(head)]
    ratios = []
    small_by_name = {p["phase"]: p for p in small["phases"]}
    for p in big["phases"]:
        q = small_by_name[p["phase"]]
        ratio = p["p50_ms"] / q["p50_ms"] if q["p50_ms"] else None
        ratios.append(
            {
                "phase": p["phase"],
                "p50_big_ms": p["p50_ms"],
                "p50_small_ms": q["p50_ms"],
                "ratio": ratio,
            }
        )
        lines.append(
            f"{p['phase']:<26} {fmt(p['p50_ms']):>11} {fmt(q['p50_ms']):>13} {fmt(ratio):>10}"
        )
    return "\n".join(lines), ratios


def measure_read_path(server: Server, seconds: float) -> dict[str, Any]:
    """GET-one-rule and ``/healthz`` rates of ``server`` (a probe rule is created, then deleted)."""
    path = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.ContainerRegistry/registries/{SMALL_REGISTRY}/cacheRules/rate-probe"
        f"?api-version={API_VERSION}"
    )
    auth = {"Authorization": f"Bearer {server.token}"}
    body = {
        "properties": {"sourceRepository": "docker.io/library/probe", "targetRepository": "probe"}
    }
    requests.put(server.url + path, json=body, headers=auth, timeout=30).raise_for_status()
    try:
        return read_path_rates(server.url, server.token, path, seconds)
    finally:
        requests.delete(server.url + path, headers=auth, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mgmt", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rules", type=int, default=1000, help="rules in the big registry")
    parser.add_argument("--small", type=int, default=10, help="rules in the small registry")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="admin URL; a scratch database is created there and dropped afterwards",
    )
    parser.add_argument(
        "--small-rounds",
        type=int,
        default=10,
        help="repeat the small registry's create/list/get/delete cycle this many times, so its "
        "percentiles rest on more than --small samples (default 10)",
    )
    parser.add_argument(
        "--list-repeats", type=int, default=20, help="full lists per registry and round"
    )
    parser.add_argument(
        "--raw-requests", type=int, default=200, help="raw GETs per registry (over all rounds)"
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=10, help="duration of each read-path rate run"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log)")
    args = parser.parse_args(argv)
    if min(args.rules, args.small, args.small_rounds, args.list_repeats, args.raw_requests) < 1:
        parser.error("counts must be at least 1")

    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="entrepot-bench-"))
    database: AbstractContextManager[str] = (
        nullcontext("") if args.database == "sqlite" else scratch_postgres(args.postgres_url)
    )
    with database as database_url:
        server = Server(tmp, database_url, max_rules=max(args.rules, args.small))
        try:
            server.start()
            rates = measure_read_path(server, args.rate_seconds)
            counter = RequestCounter()
            client = genuine_sdk_client(server.url, server.token, counter)
            big = run_registry(
                server,
                client,
                counter,
                BIG_REGISTRY,
                args.rules,
                1,
                args.list_repeats,
                args.raw_requests,
            )
            small = run_registry(
                server,
                client,
                counter,
                SMALL_REGISTRY,
                args.small,
                args.small_rounds,
                args.list_repeats,
                args.raw_requests,
            )
        except Exception:
            print(f"benchmark failed; server log tail:\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()
            if not args.keep:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()[0]

    backend = (
        "SQLite (file in the temp data dir)"
        if args.database == "sqlite"
        else ("PostgreSQL (scratch database on " + urlsplit(args.postgres_url).netloc + ")")
    )
    print("entrepot management API benchmark")
    print(
        f"  client: genuine azure-mgmt-containerregistry "
        f"{package_version('azure-mgmt-containerregistry')} (azure-core "
        f"{package_version('azure-core')}), api-version {API_VERSION}, "
        f"polling_interval {SDK_POLLING_INTERVAL} s"
    )
    print(
        f"  server: entrepot serve on 127.0.0.1, {backend}; Retry-After {RETRY_AFTER} s "
        f"(server default), page size 100 (server default)"
    )
    print(
        f"  host: Python {platform.python_version()}, {os.cpu_count()} CPUs shared by client and "
        f"server; 1-min load average {load_start:.2f} at start, {load_end:.2f} at end"
    )
    print()
    print(
        "  Create/delete are LROs run one at a time: PUT/DELETE, one status poll at once,\n"
        f"  further polls only after Retry-After ({RETRY_AFTER} s); create ends with a GET of the\n"
        "  rule. An operation needing more than one status poll adds >= 1 s (counted below).\n"
        "  'initial PUT/DELETE' = the server's cost of the change; 'LRO, to result' = what an SDK\n"
        "  caller waits for."
    )
    for result in (big, small):
        print()
        rounds = result["rounds"]
        again = f", create/list/get/delete cycle run {rounds} times" if rounds > 1 else ""
        print(f"registry {result['registry']}: {result['rules']} rules{again}")
        print(phase_table(result))
    print("  * p99 from fewer than 100 samples: close to the maximum")
    print()
    table, ratios = ratio_table(big, small)
    print(
        f"p50 ratio, {args.rules} rules / {args.small} rules (about 1.0 = cost per operation "
        "does not grow with the number of rules)"
    )
    print(table)
    print(
        f"  'list (one page)' compares a full page of up to 100 items with a page of "
        f"{min(args.small, 100)}; 'list (per item)' is the per-rule cost of listing."
    )
    print()
    print(
        f"read path ({rates['tool']}, {args.rate_seconds:g} s each): GET one cache rule "
        f"{rates['get_rps']:.0f} req/s, /healthz {rates['healthz_rps']:.0f} req/s, "
        f"ratio {rates['ratio']:.2f} (target >= 0.25)"
    )
    print()
    print(f"total run time {elapsed:.1f} s")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "database": args.database,
                    "rules": args.rules,
                    "small": args.small,
                    "retry_after_s": int(RETRY_AFTER),
                    "sdk": package_version("azure-mgmt-containerregistry"),
                    "big": big,
                    "small_registry": small,
                    "p50_ratios": ratios,
                    "read_path": rates,
                    "total_seconds": elapsed,
                    "load_average_1min": [load_start, load_end],
                },
                indent=2,
            )
        )
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
