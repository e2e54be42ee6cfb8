"""The access log says where the registry face took content from (``cache`` = the
``X-Entrepot-Cache`` header: ``hit``, ``miss``, ``stale``; absent: ``null`` / ``-``), in both
formats, for a real ``entrepot serve`` pulling through a real upstream."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests

from tests.conftest import ServerProcess
from tests.registries import Registry, push_test_image
from tests.test_registry_routes import put_rule
from tests.test_serving import new_lines


def cache_of(line: str, access_format: str) -> tuple[str, str | None]:
    """``(path, cache)`` of one access-log line."""
    if access_format == "json":
        entry = json.loads(line)
        return str(entry["path"]), entry["cache"]
    assert " INFO entrepot.access: " in line, line
    words = line.split(" INFO entrepot.access: ", 1)[1].split()
    assert words[-1].startswith("cache="), line
    return words[1], words[-1].removeprefix("cache=")


@pytest.mark.slow
@pytest.mark.parametrize("access_format", ["json", "text"])
def test_the_access_log_says_where_content_came_from(
    process_factory: Callable[..., ServerProcess], open_registry: Registry, access_format: str
) -> None:
    push_test_image(open_registry, "lib/logged", "v1")
    layer = open_registry.images[("lib/logged", "v1")].layer_digest
    extra = (
        f'\n[upstreams."{open_registry.login_server}"]\nurl = "{open_registry.url}"\n'
        "\n[cache]\ntag_ttl_seconds = 0\n"  # every pull by tag asks the upstream
    )
    server = process_factory(extra, env={"ENTREPOT_SERVER_ACCESS_LOG": access_format})
    put_rule(server, "up-lib", f"{open_registry.login_server}/lib/*", "up/*")
    before = len(server.log().splitlines())
    base = f"{server.url}/v2/up/logged"
    answers: list[tuple[str, requests.Response]] = []

    def get(label: str, path: str) -> None:
        answers.append((label, requests.get(f"{base}/{path}", timeout=30)))

    get("manifest miss", "manifests/v1")
    digest = answers[-1][1].headers["Docker-Content-Digest"]
    get("manifest hit", f"manifests/{digest}")
    get("blob miss", f"blobs/{layer}")
    get("blob hit", f"blobs/{layer}")
    get("error", "manifests/nope")
    open_registry.stop()
    get("manifest stale", "manifests/v1")
    expected = {
        "manifest miss": "miss",
        "manifest hit": "hit",
        "blob miss": "miss",
        "blob hit": "hit",
        "error": None,
        "manifest stale": "stale",
    }
    for label, answer in answers:
        assert answer.headers.get("X-Entrepot-Cache") == expected[label], (label, answer.text)
    ids = [answer.headers["X-Request-Id"] for _, answer in answers]
    lines = new_lines(server, before, lambda got: all(any(i in x for x in got) for i in ids))
    for (label, answer), request_id in zip(answers, ids, strict=True):
        line = next((x for x in lines if request_id in x), None)
        assert line is not None, (label, lines)
        path, cache = cache_of(line, access_format)
        assert path == answer.request.path_url, line
        want = expected[label]
        assert cache == (want if want is not None or access_format == "json" else "-"), line
