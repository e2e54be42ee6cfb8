"""``entrepot token ...`` end to end: the CLI as a subprocess against real ``entrepot serve``.

Online commands go through the token API with the admin token; ``rotate-admin --data-dir``
opens the data dir's database itself, with no server token at all, while the server runs.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import ServerProcess
from tests.test_cli import failed, ok, ok_json, run, table_rows

Factory = Callable[..., ServerProcess]
SHOWN_ONCE = "only time the token is shown"


def works(server: ServerProcess, token: str) -> int:
    """The status of an admin-only request made with ``token``."""
    return requests.get(
        f"{server.url}/entrepot/tokens",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).status_code


def test_token_create_list_show_rotate_revoke(server_factory: Factory) -> None:
    server = server_factory()
    created = run(server, "token", "create", "--name", "ci-puller", "--role", "pull")
    item = ok_json(created)
    assert SHOWN_ONCE in created.stderr
    pull = item["value"]
    assert (item["name"], item["role"], item["createdBy"]) == ("ci-puller", "pull", "admin")
    assert works(server, pull) == 403  # a valid pull token: no management API

    table = ok(
        run(
            server,
            *("token", "create", "-n", "ops", "--role", "ADMIN", "--description", "ops-team"),
            *("-o", "table"),
        )
    )
    rows = table_rows(table.stdout)
    assert rows[0] == ["Name", "Role", "Value"] and rows[-1][:2] == ["ops", "admin"]
    ops = rows[-1][2]
    assert works(server, ops) == 200

    listed = run(server, "token", "list")
    assert [(t["name"], t["role"]) for t in ok_json(listed)] == [
        ("admin", "admin"),
        ("ci-puller", "pull"),
        ("ops", "admin"),
    ]
    table = ok(run(server, "token", "list", "-o", "table")).stdout
    assert table_rows(table)[0][:2] == ["Name", "Role"]
    shown = ok_json(run(server, "token", "show", "OPS"))
    assert (shown["name"], shown["description"]) == ("ops", "ops-team")
    for output in (listed.stdout + listed.stderr, table, repr(shown)):
        assert pull not in output and ops not in output and "value" not in output.lower()

    rotated = run(server, "token", "rotate", "ci-puller")
    new_pull = ok_json(rotated)["value"]
    assert SHOWN_ONCE in rotated.stderr
    assert (works(server, pull), works(server, new_pull)) == (401, 403)

    assert ok(run(server, "token", "revoke", "ci-puller")).stdout == ""
    assert works(server, new_pull) == 401
    # With a revoked or a pull token, the CLI fails with the server's reason.
    stderr = failed(run(server, "token", "list", env={"ENTREPOT_TOKEN": new_pull}), 1)
    assert "InvalidAuthenticationToken" in stderr and new_pull not in stderr
    other = ok_json(run(server, "token", "create", "-n", "p2", "--role", "pull"))["value"]
    stderr = failed(run(server, "registry", "list", env={"ENTREPOT_TOKEN": other}), 1)
    assert "AuthorizationFailed" in stderr

    # Errors: one line, exit 1 for the server's refusals, 2 for usage.
    assert "ResourceNotFound" in failed(run(server, "token", "revoke", "nobody"), 1)
    assert "ResourceExists" in failed(
        run(server, "token", "create", "-n", "OPS", "--role", "pull"), 1
    )
    assert "InvalidResourceName" in failed(
        run(server, "token", "create", "-n", "bad/name", "--role", "pull"), 1
    )
    assert "--role" in failed(run(server, "token", "create", "-n", "x", "--role", "root"), 2)
    bootstrap = server.token
    ok(run(server, "token", "revoke", "admin", env={"ENTREPOT_TOKEN": ops}))
    assert works(server, bootstrap) == 401
    stderr = failed(run(server, "token", "revoke", "ops", env={"ENTREPOT_TOKEN": ops}), 1)
    assert "last admin token" in stderr
    assert works(server, ops) == 200


def test_rotate_admin_online_rewrites_the_token_file(server_factory: Factory) -> None:
    server = server_factory()
    old = server.token
    # The CLI finds the server and the token from the config, as a user on that host would.
    result = run(
        server, "token", "rotate-admin", "--config", str(server.config_path), with_env=False
    )
    new = ok_json(result)["value"]
    assert SHOWN_ONCE in result.stderr
    token_file = server.data_dir / "admin-token"
    assert token_file.read_text() == new + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (works(server, old), works(server, new)) == (401, 200)
    # ...and the next command reads the new token from that file.
    listed = run(server, "token", "list", "--config", str(server.config_path), with_env=False)
    assert [t["name"] for t in ok_json(listed)] == ["admin"]


def test_rotate_admin_offline_recovers_a_lost_token(server_factory: Factory) -> None:
    server = server_factory()
    old = server.token
    token_file = server.data_dir / "admin-token"
    token_file.unlink()  # lost; the server keeps running
    stderr = failed(
        run(server, "token", "list", "--config", str(server.config_path), with_env=False), 1
    )
    assert "admin-token" in stderr

    result = run(
        server, "token", "rotate-admin", "--data-dir", str(server.data_dir), with_env=False
    )
    new = ok_json(result)["value"]
    assert (ok_json(result)["name"], ok_json(result)["role"]) == ("admin", "admin")
    assert str(token_file) in result.stderr
    assert token_file.read_text() == new + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # The running server accepts the new token at once and refuses the old one.
    assert (works(server, old), works(server, new)) == (401, 200)
    listed = ok_json(
        run(server, "token", "list", "--config", str(server.config_path), with_env=False)
    )
    assert listed[0]["createdBy"] == "entrepot token rotate-admin"
    # Everything in the data dir stays private.
    for path in server.data_dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_rotate_admin_offline_on_postgresql(
    server_factory: Factory, postgres_database: str
) -> None:
    server = server_factory(env={"ENTREPOT_DATABASE_URL": postgres_database})
    old = server.token
    (server.data_dir / "admin-token").unlink()
    result = run(
        server,
        *("token", "rotate-admin", "--data-dir", str(server.data_dir)),
        with_env=False,
        env={"ENTREPOT_DATABASE_URL": postgres_database},
    )
    new = ok_json(result)["value"]
    assert (server.data_dir / "admin-token").read_text() == new + "\n"
    assert (works(server, old), works(server, new)) == (401, 200)


def test_rotate_admin_offline_refuses_a_dir_without_a_database(tmp_path: Path, server: Any) -> None:
    stderr = failed(
        run(server, "token", "rotate-admin", "--data-dir", str(tmp_path / "nope"), with_env=False),
        2,
    )
    assert "no such directory" in stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    stderr = failed(
        run(server, "token", "rotate-admin", "--data-dir", str(empty), with_env=False), 2
    )
    assert "no entrepot database" in stderr
    assert list(empty.iterdir()) == []  # nothing was created there
