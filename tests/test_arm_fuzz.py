"""Property-based fuzzing of the management API (hypothesis) against a real ``entrepot serve``.

Whatever is sent — random JSON, wrongly typed properties, unicode and ``%2F`` in names, random
methods, path suffixes, query strings and tokens — the server must answer below 500, with an
``x-ms-request-id``, and every error must be an ARM JSON error with a code (under ``/v2/``, the
registry face, OCI JSON with ``Docker-Distribution-API-Version`` instead). Random sequences of
operations on a few rules and sets must also keep the registry consistent: every credential-set
reference resolves, and no two rules overlap.

The budget is bounded (about 300 examples in all, no deadline) so the module runs in seconds.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrepot.rules import overlaps, parse_rule
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, Server

PROVIDER = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.ContainerRegistry"
)
SEQ_REGISTRY = "fuzzseq1"
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.slow  # hypothesis sends thousands of requests
SET_BODY: dict[str, Any] = {
    "identity": {"type": "SystemAssigned"},
    "properties": {
        "loginServer": "quay.io",
        "authCredentials": [
            {
                "name": "Credential1",
                "usernameSecretIdentifier": "https://myvault.vault.azure.net/secrets/u",
                "passwordSecretIdentifier": "https://myvault.vault.azure.net/secrets/p",
            }
        ],
    },
}
METHODS = ("GET", "PUT", "PATCH", "DELETE", "POST", "HEAD", "OPTIONS")


class Client:
    """Sends raw requests and checks the invariants every answer must keep."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = requests.Session()
        self.token = server.token
        self.count = 0

    def send(
        self,
        method: str,
        path_and_query: str,
        body: bytes | None = None,
        auth: str | None = "good",
    ) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if auth == "good":
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth is not None:
            headers["Authorization"] = auth
        response = self.session.request(
            method, f"{self.server.url}{path_and_query}", data=body, headers=headers, timeout=30
        )
        self.count += 1
        check_invariants(method, path_and_query, response)
        return response


def check_invariants(method: str, what: str, response: requests.Response) -> None:
    where = f"{method} {what[:300]} -> {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, where
    if what == "/v2" or what.startswith(("/v2/", "/v2?")):  # the registry face: OCI, not ARM
        check_oci_invariants(method, where, response)
        return
    assert response.headers.get("x-ms-request-id"), where
    if response.status_code >= 400 and method != "HEAD":
        assert response.headers.get("Content-Type", "").startswith("application/json"), where
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, where
        error = body["error"]
        assert isinstance(error.get("code"), str) and error["code"], where
        assert error["code"][0].isupper() and error["code"].isalnum(), where
        assert isinstance(error.get("message"), str) and error["message"], where
    if method in ("PUT", "PATCH") and response.status_code in (200, 201):
        resource = response.json()
        assert isinstance(resource, dict) and resource.get("id"), where
        assert response.headers.get("Azure-AsyncOperation", "").startswith("http"), where
        assert response.headers["Retry-After"].isdigit(), where
    if method == "DELETE" and response.status_code == 202:
        assert response.headers.get("Location", "").startswith("http"), where
    assert response.status_code != 200 or method != "DELETE", where  # the SDK rejects it


def check_oci_invariants(method: str, where: str, response: requests.Response) -> None:
    assert response.headers.get("Docker-Distribution-API-Version") == "registry/2.0", where
    assert response.headers.get("X-Request-Id"), where
    assert "x-ms-request-id" not in response.headers, where
    if response.status_code >= 400 and method != "HEAD":
        assert response.headers.get("Content-Type", "").startswith("application/json"), where
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"errors"}, where
        for error in body["errors"]:
            assert set(error) == {"code", "message", "detail"}, where
            assert isinstance(error["code"], str) and error["code"].isupper(), where
            assert isinstance(error["message"], str) and error["message"], where


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    client = Client(server)
    made = client.send(
        "PUT",
        f"{PROVIDER}/registries/{SEQ_REGISTRY}?api-version=2025-11-01",
        json.dumps({"location": "local"}).encode(),
    )
    assert made.status_code == 201, made.text
    base = f"{PROVIDER}/registries/{REGISTRY}"
    for path, body in (
        (f"{base}/credentialSets/fuzz-set1", SET_BODY),
        (
            f"{base}/cacheRules/fuzz-rule1",
            {"properties": {"sourceRepository": "quay.io/f/*", "targetRepository": "f/*"}},
        ),
    ):
        response = client.send("PUT", f"{path}?api-version=2025-11-01", encode_body(body))
        assert response.status_code == 201, response.text
    yield client


# -- strategies -----------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, they are not JSON
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
repo_like = st.one_of(
    st.sampled_from(
        [
            "quay.io/a/b",
            "quay.io/a/*",
            "quay.io/*",
            "*",
            "a/*",
            "a",
            "a/b",
            "docker.io/library/*",
            "127.0.0.1:5000/x",
            "[::1]:5000/x",
            "localhost/x",
            "quay.io/a/b:tag",
            "quay.io/a@sha256:" + "0" * 64,
            "",
            " ",
            "%2F",
            "a//b",
        ]
    ),
    st.from_regex(r"[a-z0-9.:\[\]/*@_-]{0,40}", fullmatch=True),
    st.text(max_size=40),
    st.builds(
        lambda host, parts, star: "/".join([host, *parts] + (["*"] if star else [])),
        st.sampled_from(["quay.io", "ghcr.io", "reg.example.com:5000", "docker.io", "x"]),
        st.lists(st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)?", fullmatch=True), max_size=4),
        st.booleans(),
    ),
)
secret_like = st.one_of(
    st.sampled_from(
        ["https://myvault.vault.azure.net/secrets/u", "not a uri", "", "env:X", "x" * 3000]
    ),
    st.text(max_size=40),
)
any_or = lambda strategy: strategy | json_values  # noqa: E731 - a tiny combinator
set_refs = st.one_of(
    st.sampled_from(
        [
            f"{PROVIDER}/registries/{REGISTRY}/credentialSets/fuzz-set1",
            f"{PROVIDER}/registries/{REGISTRY}/credentialSets/nosuchset",
            f"{PROVIDER}/registries/other/credentialSets/fuzz-set1",
            f"{PROVIDER}/registries/{REGISTRY}/credentialSets/a/b",
            f"{PROVIDER}/registries/{REGISTRY}/credentialSets/%2F",
        ]
    ),
    st.text(max_size=30),
)
typed_rule_bodies = st.builds(
    lambda props: {"properties": props},
    st.fixed_dictionaries(
        {"sourceRepository": repo_like, "targetRepository": repo_like},
        optional={"credentialSetResourceId": st.none() | set_refs},
    ),
)
rule_bodies = st.one_of(
    typed_rule_bodies,
    typed_rule_bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "properties": any_or(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "sourceRepository": any_or(repo_like),
                        "targetRepository": any_or(repo_like),
                        "credentialSetResourceId": any_or(set_refs),
                        "provisioningState": any_or(st.just("Succeeded")),
                    },
                )
            ),
            "id": json_values,
            "name": json_values,
        },
    ),
    json_values,
)
credentials = st.fixed_dictionaries(
    {},
    optional={
        "name": any_or(st.sampled_from(["Credential1", "credential1", "Credential2"])),
        "usernameSecretIdentifier": any_or(secret_like),
        "passwordSecretIdentifier": any_or(secret_like),
        "credentialHealth": json_values,
    },
)
typed_set_bodies = st.fixed_dictionaries(
    {
        "properties": st.fixed_dictionaries(
            {
                "loginServer": st.sampled_from(["quay.io", "ghcr.io", "127.0.0.1:5000"])
                | st.text(max_size=30),
                "authCredentials": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.just("Credential1"),
                            "usernameSecretIdentifier": secret_like,
                            "passwordSecretIdentifier": secret_like,
                        }
                    ),
                    max_size=2,
                ),
            }
        )
    },
    optional={"identity": st.just({"type": "SystemAssigned"})},
)
set_bodies = st.one_of(
    typed_set_bodies,
    typed_set_bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "identity": any_or(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "type": any_or(
                            st.sampled_from(
                                ["SystemAssigned", "UserAssigned", "None", "systemassigned"]
                            )
                        ),
                        "principalId": json_values,
                        "userAssignedIdentities": json_values,
                    },
                )
            ),
            "properties": any_or(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "loginServer": any_or(
                            st.sampled_from(["quay.io", "127.0.0.1:5000", "[::1]", "a b", ""])
                            | st.text(max_size=30)
                        ),
                        "authCredentials": any_or(st.lists(any_or(credentials), max_size=3)),
                    },
                )
            ),
        },
    ),
    json_values,
)
registry_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "location": any_or(st.sampled_from(["local", "LOCAL", "westeurope", ""])),
            "sku": any_or(st.fixed_dictionaries({}, optional={"name": any_or(st.just("Basic"))})),
            "tags": any_or(st.dictionaries(st.text(max_size=600), any_or(st.text(max_size=300)))),
        },
    ),
    json_values,
)
existing_names = st.sampled_from(["fuzz-rule1", "fuzz-set1"])
names = st.one_of(
    existing_names,
    existing_names,
    st.from_regex(r"fuzz-[a-z0-9]{1,6}", fullmatch=True),
    st.text(max_size=60).map(lambda s: quote(s, safe="")),
    st.sampled_from(
        [
            "ab%2Fcdef",
            "%2F",
            "%2f",
            "..",
            ".",
            "%00",
            "a%2Fb%2Fc",
            "fuzz-set1",
            "%252F",
            "%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
            "a" * 51,
        ]
    ),
)
versions = st.one_of(
    st.sampled_from(["2025-11-01", "2025-04-01", "2023-07-01", None, "", "2024-01-01"]),
    st.text(max_size=20),
)


def encode_body(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def query(version: str | None, extra: str = "") -> str:
    parts = [] if version is None else [f"api-version={quote(version, safe='')}"]
    if extra:
        parts.append(extra)
    return "?" + "&".join(parts) if parts else ""


# -- the fuzz tests -------------------------------------------------------------------------------
@settings(FUZZ, max_examples=120)
@given(
    data=st.data(),
    method=st.sampled_from(["PUT", "PUT", "PATCH"]),
    kind=st.sampled_from(["cacheRules", "credentialSets", "registry"]),
    name=names,
    version=st.sampled_from(["2025-11-01", "2025-04-01", "2023-07-01"]),
)
def fuzz_bodies(
    client: Client, data: st.DataObject, method: str, kind: str, name: str, version: str
) -> None:
    """Random and half-valid bodies for rules, sets and registries."""
    if kind == "registry":
        body = data.draw(registry_bodies, label="body")
        registry = name if name != REGISTRY else "fuzzreg1"
        path = f"{PROVIDER}/registries/{registry}"
    else:
        body = data.draw(rule_bodies if kind == "cacheRules" else set_bodies, label="body")
        path = f"{PROVIDER}/registries/{REGISTRY}/{kind}/{name}"
    response = client.send(method, path + query(version), encode_body(body))
    if response.status_code in (200, 201):
        # Whatever was accepted reads back and its operation finishes.
        status = client.session.get(
            response.headers["Azure-AsyncOperation"],
            headers={"Authorization": f"Bearer {client.token}"},
            timeout=30,
        )
        check_invariants("GET", "status", status)
        assert status.status_code == 200 and "status" in status.json(), status.text
        got = client.send("GET", path + query(version))
        assert got.status_code == 200, got.text
        assert got.json()["id"] == response.json()["id"]


segments = st.one_of(
    st.sampled_from(
        [
            "cacheRules",
            "credentialSets",
            "CACHERULES",
            "operationStatuses",
            "operationResults",
            "cacherules-00000000-0000-0000-0000-000000000000",
            "%2F",
            "",
            "..",
            "x",
        ]
    ),
    st.text(max_size=20).map(lambda s: quote(s, safe="")),
)
bases = st.sampled_from(
    [
        "",
        "/subscriptions",
        f"/subscriptions/{SUBSCRIPTION}",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}",
        PROVIDER,
        f"{PROVIDER}/registries",
        f"{PROVIDER}/registries/{REGISTRY}",
        f"{PROVIDER}/registries/{REGISTRY}/cacheRules",
        f"{PROVIDER}/registries/{REGISTRY}/credentialSets/fuzz-set1",
        f"/SUBSCRIPTIONS/{SUBSCRIPTION}/RESOURCEGROUPS/{RESOURCE_GROUP}/PROVIDERS/microsoft.containerregistry/REGISTRIES",
        f"/subscriptions/%2F/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerRegistry/registries",
        "/subscriptions/not-a-uuid/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/x",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{'r' * 91}"
        "/providers/Microsoft.ContainerRegistry/registries",
        "/healthz",
        "/v2/",
    ]
)
extras = st.one_of(
    st.just(""),
    st.text(max_size=30).map(lambda s: f"$skipToken={quote(s, safe='')}"),
    st.sampled_from(
        [
            "$skipToken=",
            "$skipToken=k",
            "$skipToken=k%FF%FE",
            "$skipToken=kAAAA",
            "$skipToken=%ZZ",
            "api-version=2023-07-01",
            "api-version",
            "%24skipToken=x&%24skipToken=y",
            "a=b&&c",
        ]
    ),
)


@settings(FUZZ, max_examples=100)
@given(
    method=st.sampled_from(METHODS),
    base=bases,
    tail=st.lists(segments, max_size=4),
    version=versions,
    extra=extras,
    body=st.none() | st.binary(max_size=200) | json_values.map(encode_body),
    auth=st.sampled_from(["good", "good", "good", None, "Bearer", "Basic x", "bearer  "])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(
        lambda t: f"Bearer {t}"
    ),
)
def fuzz_paths_methods_queries(
    client: Client,
    method: str,
    base: str,
    tail: list[str],
    version: str | None,
    extra: str,
    body: bytes | None,
    auth: str | None,
) -> None:
    """Random methods on random paths with random queries, bodies and credentials."""
    path = "/".join([base, *tail]) if tail else base
    if not path.startswith("/"):
        path = "/" + path
    if method == "DELETE" and path.rstrip("/").lower().endswith(f"/registries/{REGISTRY}"):
        method = "GET"  # keep the registry the other examples use
    client.send(method, path + query(version, extra), body, auth=auth)


RULE_NAMES = ("seq-rule-a", "seq-rule-b", "seq-rule-c")
SET_NAMES = ("seq-set-a", "seq-set-b")
SEQ = f"{PROVIDER}/registries/{SEQ_REGISTRY}"
RULE_SHAPES = [
    ("quay.io/a/*", "a/*"),
    ("quay.io/a/b/*", "a/b/*"),
    ("quay.io/*", "*"),
    ("quay.io/a/b", "a/b"),
    ("ghcr.io/x/b", "a/b"),
    ("docker.io/library/*", "hub/*"),
    ("quay.io/c", "c"),
]
seq_set_refs = st.sampled_from(
    [
        None,
        "absent",
        *(f"{SEQ}/credentialSets/{n}" for n in SET_NAMES),
        f"{SEQ}/credentialSets/nosuchset",
    ]
)
operations = st.one_of(
    st.tuples(
        st.just("put-rule"), st.sampled_from(RULE_NAMES), st.sampled_from(RULE_SHAPES), seq_set_refs
    ),
    st.tuples(st.just("patch-rule"), st.sampled_from(RULE_NAMES), seq_set_refs),
    st.tuples(st.just("delete-rule"), st.sampled_from(RULE_NAMES)),
    st.tuples(
        st.just("put-set"), st.sampled_from(SET_NAMES), st.sampled_from(["quay.io", "ghcr.io"])
    ),
    st.tuples(st.just("patch-set"), st.sampled_from(SET_NAMES), secret_like),
    st.tuples(st.just("delete-set"), st.sampled_from(SET_NAMES)),
)


def run_operation(client: Client, op: tuple[Any, ...]) -> None:
    v = "?api-version=2025-11-01"
    kind = op[0]
    if kind == "put-rule":
        _, name, (source, target), ref = op
        props: dict[str, Any] = {"sourceRepository": source, "targetRepository": target}
        if ref != "absent":
            props["credentialSetResourceId"] = ref
        client.send("PUT", f"{SEQ}/cacheRules/{name}{v}", encode_body({"properties": props}))
    elif kind == "patch-rule":
        _, name, ref = op
        body = {"properties": {} if ref == "absent" else {"credentialSetResourceId": ref}}
        client.send("PATCH", f"{SEQ}/cacheRules/{name}{v}", encode_body(body))
    elif kind == "put-set":
        _, name, login = op
        body = {**SET_BODY, "properties": {**SET_BODY["properties"], "loginServer": login}}
        client.send("PUT", f"{SEQ}/credentialSets/{name}{v}", encode_body(body))
    elif kind == "patch-set":
        _, name, secret = op
        body = {
            "properties": {
                "authCredentials": [{"name": "Credential1", "passwordSecretIdentifier": secret}]
            }
        }
        client.send("PATCH", f"{SEQ}/credentialSets/{name}{v}", encode_body(body))
    else:
        collection = "cacheRules" if kind == "delete-rule" else "credentialSets"
        client.send("DELETE", f"{SEQ}/{collection}/{op[1]}{v}")


def listing(client: Client, collection: str) -> list[dict[str, Any]]:
    response = client.send("GET", f"{SEQ}/{collection}?api-version=2025-11-01")
    assert response.status_code == 200, response.text
    return list(response.json()["value"])  # a handful of items: one page


@settings(FUZZ, max_examples=80)
@given(ops=st.lists(operations, min_size=1, max_size=8))
def fuzz_operation_sequences(client: Client, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        run_operation(client, op)
    deadline = time.monotonic() + 15
    while True:
        rules, sets = listing(client, "cacheRules"), listing(client, "credentialSets")
        states = {r["properties"]["provisioningState"] for r in rules + sets}
        if states <= {"Succeeded", "Failed", "Canceled"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    set_ids = {s["id"].lower() for s in sets}
    for rule in rules:
        ref = rule["properties"].get("credentialSetResourceId")
        assert ref is None or ref.lower() in set_ids, (rule, sorted(set_ids))
        got = client.send("GET", f"{SEQ}/cacheRules/{rule['name']}?api-version=2025-11-01")
        assert got.status_code == 200 and got.json() == rule
    patterns = [
        (
            r["name"],
            parse_rule(r["properties"]["sourceRepository"], r["properties"]["targetRepository"]),
        )
        for r in rules
    ]
    for i, (name_a, a) in enumerate(patterns):
        for name_b, b in patterns[i + 1 :]:
            assert not overlaps(a, b), (name_a, name_b)


def assert_clean_log(server: Server) -> None:
    """No request and no operation failed unexpectedly on the server (a 500 or a crash)."""
    log = server.log()
    assert "unhandled error in" not in log, log[-5000:]
    assert "failed unexpectedly" not in log, log[-5000:]


# -- the registry face (/v2/) ---------------------------------------------------------------------
repository_names = st.one_of(
    st.sampled_from(
        [
            "f/app",  # covered by fuzz-rule1 (quay.io/f/*): reaches the engine stand-in
            "f/a/b/c",
            "f",
            "library/alpine",
            "F/app",
            "f/../x",
            "f/%2E%2E/x",
            "f//x",
            "f/a..b",
            "-f/x",
            "f/" + "a" * 300,
            "%2F",
            "f%2Fx",
            "",
        ]
    ),
    st.from_regex(r"[a-zA-Z0-9._/-]{1,40}", fullmatch=True),
    st.text(max_size=30).map(lambda s: quote(s, safe="/")),
)
references = st.one_of(
    st.sampled_from(
        [
            "latest",
            "sha256:" + "a" * 64,
            "sha256:" + "A" * 64,
            "sha512:" + "b" * 128,
            "md5:" + "c" * 32,
            "sha256:",
            "-bad",
            "t" * 200,
            ":",
            "%FF",
        ]
    ),
    st.text(max_size=30).map(lambda s: quote(s, safe=":")),
)
v2_queries = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "n=10",
            "n=-1",
            "n=99999999999999999999999",
            "n=x",
            "n=",
            "last=zzz&n=1",
            "ns=docker.io",
            "ns=quay.io",
            "ns=",
            "ns=not%20a%20host",
            "ns=%FF",
            "artifactType=application/x",
            "digest=sha256:" + "a" * 64,
        ]
    ),
    st.text(max_size=30).map(lambda s: "ns=" + quote(s, safe="")),
    st.text(max_size=30).map(lambda s: "n=" + quote(s, safe="")),
)


@settings(FUZZ, max_examples=150)
@given(
    method=st.sampled_from(METHODS),
    name=repository_names,
    route=st.sampled_from(
        ["manifests/", "blobs/", "referrers/", "tags/list", "blobs/uploads/", "", "x/"]
    ),
    reference=references,
    extra=v2_queries,
    auth=st.sampled_from([None, "good", "Basic x", "Bearer nope", "Basic YWRtaW46"])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40).map(
        lambda t: f"Basic {t}"
    ),
)
def fuzz_registry_face(
    client: Client, method: str, name: str, route: str, reference: str, extra: str, auth: str | None
) -> None:
    """Random pulls and pushes: never a 5xx, always OCI JSON (checked by ``Client.send``)."""
    tail = route + reference if route.endswith("/") and route != "blobs/uploads/" else route
    path = f"/v2/{name}/{tail}" + (f"?{extra}" if extra else "")
    if auth == "good":
        auth = "Basic " + base64.b64encode(f"admin:{client.token}".encode()).decode()
    response = client.send(method, path, None, auth=auth)
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="entrepot"', path


def test_fuzz_registry_face(client: Client, server: Server) -> None:
    sent = client.count
    fuzz_registry_face(client)
    assert client.count - sent >= 150
    assert_clean_log(server)


def test_fuzz_bodies(client: Client, server: Server) -> None:
    sent = client.count
    fuzz_bodies(client)
    assert client.count - sent >= 120  # every example sent at least one request
    assert_clean_log(server)


def test_fuzz_paths_methods_queries(client: Client, server: Server) -> None:
    sent = client.count
    fuzz_paths_methods_queries(client)
    assert client.count - sent >= 100
    assert_clean_log(server)


def test_fuzz_operation_sequences_keep_the_registry_consistent(
    client: Client, server: Server
) -> None:
    sent = client.count
    fuzz_operation_sequences(client)
    assert client.count - sent >= 80 * 3  # at least one operation and two listings each
    assert_clean_log(server)
