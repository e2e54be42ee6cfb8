"""Pull-through benchmark: entrepot against two peers, in front of one upstream, in one run.

Run from the repository root::

    .venv/bin/pip install -e '.[bench]'          # drayage (PyPI); optional
    .venv/bin/python -m benchmarks.pull          # 200 MiB blob, 20 clients
    .venv/bin/python -m benchmarks.pull --quick  # small sizes: a smoke run

It starts Debian's ``docker-registry`` as the upstream and, in front of it, three pull-through
caches (see ``benchmarks/caches.py``): the same ``docker-registry`` in proxy mode (the CNCF
distribution), ``drayage`` (a Rust cache from PyPI) and entrepot. Into the upstream it pushes
two random blobs of ``--blob-mib`` MiB, A and B, and one manifest (tag ``v1``) naming them, in
one repository per cache (``lib/distribution``, ``lib/drayage``, ``lib/entrepot``; blobs
mounted, not uploaded again) plus ``lib/direct`` for the direct GETs. Then, figure by figure,
cache after cache:

1. ``--clients`` concurrent cold GETs of blob A: the wall time until the last body is complete,
   every body's sha256 checked, the upstream GETs of A counted from the upstream's access log;
   during it the RSS of each cache (VmHWM of its process, the exact peak);
2. one cold GET of blob B (sha256 checked as it arrives, like a client does);
3. one GET of B per cache that checks the sha256, then ``--repeats`` rounds of one timed warm
   GET of B from each cache and one direct from the upstream (the floor), without hashing,
   interleaved; the median of each;
4. warm manifest-by-tag GETs per second (``wrk -t2 -c16``, or a Python load generator if wrk is
   missing) and, right after entrepot's, entrepot's own ``/healthz`` rate (its stack's ceiling).

Each cold figure uses a digest that cache has never seen, so every cache starts it cold. The
table gives each figure per cache, the best peer, entrepot's ratio to it, the target and
PASS/FAIL. Only 127.0.0.1 is contacted. Nothing here depends on pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from benchmarks.caches import (
    Distribution,
    Drayage,
    Entrepot,
    Process,
    Upstream,
    drayage_binary,
    drayage_version,
)
from benchmarks.rates import measure

CACHES = ("distribution", "drayage", "entrepot")
PEERS = ("distribution", "drayage")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MIB = 1 << 20
CHUNK = MIB
TAG = "v1"


# -- the content ---------------------------------------------------------------------------------
@dataclass
class Blob:
    path: Path
    digest: str
    size: int


def make_blob(path: Path, size: int) -> Blob:
    """A file of ``size`` random bytes (fresh for every run) and its digest."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK * 4, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return Blob(path, "sha256:" + digest.hexdigest(), size)


def push_blob(upstream: Upstream, repo: str, blob: Blob) -> None:
    """Monolithic upload: POST an upload session, PUT the whole file with its digest."""
    start = requests.post(f"{upstream.url}/v2/{repo}/blobs/uploads/", timeout=30)
    if start.status_code != 202:
        raise RuntimeError(f"upload of {blob.digest} refused: {start.status_code} {start.text}")
    location = start.headers["Location"]
    if location.startswith("/"):
        location = upstream.url + location
    separator = "&" if "?" in location else "?"
    with blob.path.open("rb") as body:
        done = requests.put(
            f"{location}{separator}digest={blob.digest}",
            data=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
            timeout=600,
        )
    if done.status_code != 201:
        raise RuntimeError(f"upload of {blob.digest} failed: {done.status_code} {done.text}")


def mount_blob(upstream: Upstream, repo: str, source: str, digest: str) -> None:
    answer = requests.post(
        f"{upstream.url}/v2/{repo}/blobs/uploads/",
        params={"mount": digest, "from": source},
        timeout=30,
    )
    if answer.status_code != 201:
        raise RuntimeError(f"mounting {digest} into {repo}: {answer.status_code} {answer.text}")


def push_image(upstream: Upstream, repos: list[str], blobs: list[Blob], work: Path) -> bytes:
    """Upload ``blobs`` and a config to ``repos[0]``, mount them into the others, and push one
    manifest (tag ``v1``) naming them to every repository; returns the manifest bytes."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    config_path = work / "config.json"
    config_path.write_bytes(config)
    config_blob = Blob(config_path, "sha256:" + hashlib.sha256(config).hexdigest(), len(config))
    for blob in [config_blob, *blobs]:
        push_blob(upstream, repos[0], blob)
        for repo in repos[1:]:
            mount_blob(upstream, repo, repos[0], blob.digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": b.digest, "size": b.size} for b in blobs],
        },
        separators=(",", ":"),
    ).encode()
    for repo in repos:
        answer = requests.put(
            f"{upstream.url}/v2/{repo}/manifests/{TAG}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            timeout=30,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"manifest push to {repo}: {answer.status_code} {answer.text}")
    return manifest


# -- the client ----------------------------------------------------------------------------------
def get_blob(base: Process, path: str, blob: Blob, *, verify: bool) -> float:
    """GET ``path`` from ``base`` to the last byte; seconds. Raises unless the answer is 200
    with ``blob.size`` bytes (and, with ``verify``, the sha256 of ``blob.digest``)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    digest = hashlib.sha256() if verify else None
    conn = http.client.HTTPConnection("127.0.0.1", base.port, timeout=600)
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{base.name} answered {response.status}: {response.read()[:300]!r}")
        received = 0
        while True:
            n = response.readinto(buffer)
            if not n:
                break
            received += n
            if digest is not None:
                digest.update(view[:n])
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    if received != blob.size:
        raise RuntimeError(f"{base.name}: {received} bytes instead of {blob.size}")
    if digest is not None and "sha256:" + digest.hexdigest() != blob.digest:
        raise RuntimeError(f"{base.name}: the body's sha256 is not {blob.digest}")
    return elapsed


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def status_kib(pid: int, field_name: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of /proc/<pid>/status summed over the tree."""
    total = 0
    for each in tree_pids(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class RssSampler:
    """Samples the tree's VmRSS every 20 ms in a thread; ``peak_kib`` is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def concurrent_gets(base: Process, path: str, blob: Blob, clients: int) -> dict[str, Any]:
    """``clients`` GETs started together, each body's sha256 checked; wall time to the last."""
    barrier = threading.Barrier(clients + 1)
    errors: list[str] = []
    times: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        try:
            elapsed = get_blob(base, path, blob, verify=True)
        except Exception as exc:
            with lock:
                errors.append(str(exc))
        else:
            with lock:
                times.append(elapsed)

    rss_before = status_kib(base.pid, "VmRSS")
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    with RssSampler(base.pid) as sampler:
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "ok": len(times),
        "errors": errors[:3],
        "slowest_client_s": max(times, default=None),
        "rss_before_mb": rss_before / 1024,
        "rss_sampled_peak_mb": sampler.peak_kib / 1024,
        "rss_hwm_mb": status_kib(base.pid, "VmHWM") / 1024,
    }


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Run:
    args: argparse.Namespace
    upstream: Upstream
    caches: dict[str, Process]
    blob_a: Blob
    blob_b: Blob
    manifest: bytes
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, cache: str, key: str, step: Callable[[], Any]) -> None:
        """Store ``step()`` under ``results[cache][key]``, or its failure as ``error``."""
        try:
            self.results.setdefault(cache, {})[key] = step()
        except Exception as exc:
            self.results.setdefault(cache, {})[key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {cache} {key}: FAILED: {exc}", file=sys.stderr)

    def repo(self, cache: str) -> str:
        return f"{self.caches[cache].prefix}{cache}"

    def blob_path(self, cache: str, blob: Blob) -> str:
        return f"/v2/{self.repo(cache)}/blobs/{blob.digest}"

    def upstream_path(self, cache: str, blob: Blob) -> str:
        return f"/v2/lib/{cache}/blobs/{blob.digest}"


def run_concurrent(run: Run, cache: str) -> dict[str, Any]:
    base = run.caches[cache]
    before = run.upstream.count("GET", run.upstream_path(cache, run.blob_a))
    result = concurrent_gets(base, run.blob_path(cache, run.blob_a), run.blob_a, run.args.clients)
    after = run.upstream.settled_count("GET", run.upstream_path(cache, run.blob_a))
    result["upstream_gets"] = after - before
    if result["ok"] != run.args.clients:
        raise RuntimeError(
            f"only {result['ok']}/{run.args.clients} clients completed: {result['errors']}"
        )
    return result


def run_cold(run: Run, cache: str) -> dict[str, Any]:
    base = run.caches[cache]
    seconds = get_blob(base, run.blob_path(cache, run.blob_b), run.blob_b, verify=True)
    gets = run.upstream.settled_count("GET", run.upstream_path(cache, run.blob_b), quiet=0.3)
    return {"seconds": seconds, "upstream_gets": gets}


def run_warm(run: Run) -> None:
    """For each cache, one GET of blob B that checks its sha256; then ``--repeats`` rounds of one
    timed GET (no hashing) from each cache and one direct from the upstream, interleaved so that
    a change in the machine's load hits all alike. Records the median of each."""
    targets: dict[str, tuple[Process, str]] = {
        name: (base, run.blob_path(name, run.blob_b)) for name, base in run.caches.items()
    }
    for name, (base, path) in targets.items():
        run.record(
            name,
            "verified",
            lambda b=base, p=path: {"seconds": get_blob(b, p, run.blob_b, verify=True)},
        )
    failed = {n for n in targets if "error" in run.results[n]["verified"]}
    targets = {n: t for n, t in targets.items() if n not in failed}
    targets["upstream"] = (run.upstream, f"/v2/lib/direct/blobs/{run.blob_b.digest}")
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(run.args.repeats):
        for name, (base, path) in targets.items():
            times[name].append(get_blob(base, path, run.blob_b, verify=False))
    for name, samples in times.items():
        entry = {"seconds": statistics.median(samples), "min_s": min(samples), "all_s": samples}
        run.results.setdefault(name, {})["direct" if name == "upstream" else "warm"] = entry


def run_manifest_rate(run: Run, cache: str) -> dict[str, Any]:
    base = run.caches[cache]
    url = f"{base.url}/v2/{run.repo(cache)}/manifests/{TAG}"
    headers = {"Accept": OCI_MANIFEST}
    answer = requests.get(url, headers=headers, timeout=30)  # warm it
    if answer.status_code != 200 or answer.content != run.manifest:
        raise RuntimeError(f"manifest GET answered {answer.status_code}: {answer.text[:300]}")
    upstream_path = f"/v2/lib/{cache}/manifests/{TAG}"

    def upstream_requests() -> int:
        return sum(run.upstream.count(m, upstream_path) for m in ("HEAD", "GET"))

    before = upstream_requests()
    rps, tool = measure(url, headers, run.args.rate_seconds)
    after = run.upstream.settled_count("HEAD", upstream_path, quiet=0.3)
    after += run.upstream.count("GET", upstream_path)
    return {"rps": rps, "tool": tool, "upstream_requests": after - before}


def healthz_rate(base: Process, seconds: float) -> dict[str, Any]:
    rps, tool = measure(f"{base.url}/healthz", {}, seconds)
    return {"rps": rps, "tool": tool}


# -- the report ----------------------------------------------------------------------------------
def value(run: Run, cache: str, key: str, name: str) -> float | None:
    entry = run.results.get(cache, {}).get(key)
    if not isinstance(entry, dict) or name not in entry:
        return None
    return float(entry[name])


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "s":
        return f"{x:.2f}" if x >= 1 else f"{x:.3f}"
    if unit == "rps":
        return f"{x:,.0f}"
    if unit == "mb":
        return f"{x:.0f}"
    return f"{x:g}"


@dataclass
class Row:
    label: str
    unit: str
    values: dict[str, float | None]
    lower_is_better: bool = True
    reference: str = ""  # what entrepot is held against besides the peers
    target: str = ""
    passed: bool | None = None

    def best_peer(self) -> tuple[str, float] | None:
        peers = [(c, v) for c in PEERS if (v := self.values.get(c)) is not None]
        if not peers:
            return None
        pick = min if self.lower_is_better else max
        return pick(peers, key=lambda cv: cv[1])

    def check(self, target: str, ok: Callable[[float], bool]) -> None:
        self.target = target
        mine = self.values.get("entrepot")
        self.passed = None if mine is None else ok(mine)


def build_rows(run: Run) -> list[Row]:
    """The table: one row per figure, entrepot's targets checked."""
    n, mib = run.args.clients, run.args.blob_mib
    per_cache = {
        "gets": ("concurrent", "upstream_gets"),
        "wall": ("concurrent", "wall_s"),
        "rss": ("concurrent", "rss_hwm_mb"),
        "cold": ("cold", "seconds"),
        "warm": ("warm", "seconds"),
        "rate": ("manifest", "rps"),
        "rate_upstream": ("manifest", "upstream_requests"),
    }
    v = {
        name: {c: value(run, c, key, field) for c in CACHES}
        for name, (key, field) in per_cache.items()
    }
    gets = Row(f"upstream GETs, {n} cold clients", "n", v["gets"])
    wall = Row(f"wall time, {n} cold clients (s)", "s", v["wall"])
    cold = Row(f"cold GET, {mib} MiB (s)", "s", v["cold"])
    warm = Row(f"warm GET, {mib} MiB (s)", "s", v["warm"])
    rate = Row("manifest by tag, warm (req/s)", "rps", v["rate"], lower_is_better=False)
    rate_upstream = Row("  upstream requests during it", "n", v["rate_upstream"])
    rss = Row(f"peak RSS, {n}-client run (MB)", "mb", v["rss"])
    gets.check("= 1", lambda x: x == 1)
    for row in (wall, cold):
        peer = row.best_peer()
        if peer is not None:
            row.check(f"<= {fmt(peer[1], 's')} (best peer)", lambda x, p=peer[1]: x <= p)
    direct = value(run, "upstream", "direct", "seconds")
    if direct is not None:
        warm.reference = f"{fmt(direct, 's')} (direct upstream GET)"
        warm.check(f"<= {fmt(direct * 1.1, 's')} (direct +10 %)", lambda x: x <= direct * 1.1)
    healthz = value(run, "entrepot", "healthz", "rps")
    if healthz is not None:
        rate.reference = f"{fmt(healthz, 'rps')} (entrepot /healthz)"
        rate.check(f">= {healthz / 2:,.0f} (healthz / 2)", lambda x: x >= healthz / 2)
    idle = value(run, "entrepot", "concurrent", "rss_before_mb")
    if idle is not None:
        rss.reference = f"{fmt(idle, 'mb')} (entrepot before the run)"
    rss.check("< 200", lambda x: x < 200)
    return [gets, wall, cold, warm, rate, rate_upstream, rss]


def render(rows: list[Row], run: Run) -> str:
    header = [
        "figure",
        *CACHES,
        "best peer",
        "entrepot/best",
        "reference",
        "target for entrepot",
        "result",
    ]
    table = [header]
    for row in rows:
        peer = row.best_peer()
        mine = row.values.get("entrepot")
        ratio = f"{mine / peer[1]:.2f}" if peer and mine is not None and peer[1] else "-"
        result = {None: "", True: "PASS", False: "FAIL"}[row.passed]
        if row.target and row.passed is None:
            result = "FAIL (no figure)"
        cells = [row.label]
        for cache in CACHES:
            present = cache in run.caches
            cells.append(fmt(row.values.get(cache), row.unit) if present else "n/a")
        cells += [
            f"{fmt(peer[1], row.unit)} ({peer[0]})" if peer else "-",
            ratio,
            row.reference or "-",
            row.target,
            result,
        ]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for i, r in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(w) if j in (0, 6, 7) else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def start_caches(
    only: list[str], upstream: Upstream, tmp: Path, notes: list[str]
) -> dict[str, Process]:
    caches: dict[str, Process] = {}
    for name in only:
        process: Process
        if name == "distribution":
            process = Distribution(tmp / name, upstream)
        elif name == "drayage":
            binary = drayage_binary()
            if binary is None:
                notes.append(
                    "drayage: not installed (pip install -e '.[bench]'); measured without it"
                )
                continue
            notes.append(f"drayage: {drayage_version(binary)}, upstream {upstream.url} only")
            process = Drayage(tmp / name, upstream, binary)
        else:
            process = Entrepot(tmp / name, upstream)
        try:
            process.start()
        except Exception as exc:
            notes.append(f"{name}: could not be started, measured without it: {exc}")
            continue
        caches[name] = process
    return caches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pull", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--blob-mib", type=int, default=None, help="blob size (default 200)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent cold clients")
    parser.add_argument(
        "--rate-seconds", type=float, default=None, help="duration of each rate run (default 10)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds of timed warm and direct GETs"
    )
    parser.add_argument(
        "--only", default=",".join(CACHES), help="comma-separated caches to run (default all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 MiB blobs, 2 s rate runs"
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    args.blob_mib = args.blob_mib or (8 if args.quick else 200)
    args.rate_seconds = args.rate_seconds or (2 if args.quick else 10)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if not only or set(only) - set(CACHES):
        parser.error(f"--only takes a comma-separated subset of {', '.join(CACHES)}")
    if min(args.blob_mib, args.clients, args.repeats) < 1:
        parser.error("sizes and counts must be at least 1")

    load_start = os.getloadavg()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="entrepot-pull-bench-"))
    upstream = Upstream(tmp / "upstream")
    caches: dict[str, Process] = {}
    try:
        upstream.start()
        print(f"making two {args.blob_mib} MiB blobs and pushing them ...", flush=True)
        size = args.blob_mib * MIB
        blob_a = make_blob(tmp / "blob-a", size)
        blob_b = make_blob(tmp / "blob-b", size)
        repos = ["lib/direct", *(f"lib/{c}" for c in CACHES)]
        manifest = push_image(upstream, repos, [blob_a, blob_b], tmp)
        notes: list[str] = []
        caches = start_caches([c for c in CACHES if c in only], upstream, tmp, notes)
        run = Run(args, upstream, caches, blob_a, blob_b, manifest, notes=notes)
        for note in notes:
            print(note, flush=True)

        print(f"{args.clients} concurrent cold GETs of blob A ...", flush=True)
        for name in caches:
            run.record(name, "concurrent", lambda n=name: run_concurrent(run, n))
        print("cold single GET of blob B ...", flush=True)
        for name in caches:
            run.record(name, "cold", lambda n=name: run_cold(run, n))
        print("warm GETs of blob B, and direct from the upstream ...", flush=True)
        run_warm(run)
        print(f"manifest rates ({args.rate_seconds:g} s each) ...", flush=True)
        for name in caches:
            run.record(name, "manifest", lambda n=name: run_manifest_rate(run, n))
            if name == "entrepot":
                base = caches[name]
                run.record(name, "healthz", lambda b=base: healthz_rate(b, args.rate_seconds))
    except Exception:
        for process in [upstream, *caches.values()]:
            print(f"--- {process.name} log tail:\n{process.log_tail()}", file=sys.stderr)
        raise
    finally:
        for process in [*caches.values(), upstream]:
            process.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()

    rows = build_rows(run)
    tool = next((e["tool"] for r in run.results.values() for e in r.values() if "tool" in e), "wrk")
    print()
    print(
        f"pull-through benchmark: blobs of {args.blob_mib} MiB, {args.clients} concurrent "
        f"clients, rates {args.rate_seconds:g} s with {tool}, warm/direct = median of "
        f"{args.repeats}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end; run took {elapsed:.0f} s"
    )
    for note in run.notes:
        print(f"note: {note}")
    print()
    print(render(rows, run))
    failures = [
        f"{c} {k}: {e['error']}"
        for c, r in run.results.items()
        for k, e in r.items()
        if isinstance(e, dict) and "error" in e
    ]
    if failures:
        print("\nerrors:")
        for failure in failures:
            print(f"  {failure}")
    concurrent = {
        c: run.results.get(c, {}).get("concurrent", {}).get("rss_sampled_peak_mb") for c in caches
    }
    print(
        "\nRSS: VmHWM of each cache's processes after the concurrent run (the exact peak since "
        "start); sampled VmRSS peak during it: "
        + ", ".join(f"{c} {fmt(m, 'mb')} MB" for c, m in concurrent.items())
    )
    if args.keep:
        print(f"files kept in {tmp}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "load_average": {"start": load_start[0], "end": load_end[0]},
                    "notes": run.notes,
                    "results": run.results,
                    "table": [
                        {
                            "figure": r.label,
                            "values": r.values,
                            "target": r.target,
                            "passed": r.passed,
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
