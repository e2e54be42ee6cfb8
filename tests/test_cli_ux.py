"""The command line as a new user meets it, following the README (issue 7, items 11-14).

Everything runs for real: the ``entrepot`` command as a subprocess, servers started by the
``server``/``server_factory`` fixtures, upstream registries from ``tests/registries.py``,
PostgreSQL on 127.0.0.1. The README's own examples are executed as written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests

from entrepot.config import ConfigErrors, load_config
from entrepot.errors import ConfigError
from tests.conftest import REGISTRY, RESOURCE_GROUP, SUBSCRIPTION, ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WHERE = ["-r", REGISTRY, "-g", RESOURCE_GROUP, "--subscription", SUBSCRIPTION]
ENTREPOT_SCRIPT = Path(sys.executable).parent / "entrepot"  # the venv's console script


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ENTREPOT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTREPOT_")}
    env.pop("NO_COLOR", None)
    env["COLUMNS"] = "80"
    env.update(extra)
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``entrepot *args`` as a subprocess, with no ENTREPOT_* variable unless ``env`` sets one."""
    return subprocess.run(
        [sys.executable, "-m", "entrepot.cli", *args],
        env=clean_env(**(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr


def as_server(server: ServerProcess) -> dict[str, str]:
    return {"ENTREPOT_URL": server.url, "ENTREPOT_TOKEN": server.token}


# -- the README -----------------------------------------------------------------------------------
def readme_blocks() -> list[tuple[str, str, str]]:
    """``(section heading, language, code)`` of every fenced block of the README, in order."""
    blocks: list[tuple[str, str, str]] = []
    section = ""
    lines = iter(README.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            blocks.append((section, line[3:].strip(), "\n".join(body) + "\n"))
    return blocks


def block(section: str, language: str, index: int = 0) -> str:
    found = [code for sec, lang, code in readme_blocks() if sec == section and lang == language]
    assert len(found) > index, f"no {language} block #{index} under {section!r} in the README"
    return found[index]


def logical_lines(code: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    return code.replace("\\\n", " ").splitlines()


def unquoted(line: str, specials: str = "*?[<>") -> list[str]:
    """The characters of ``specials`` that the shell would see unquoted in ``line`` (glob
    characters are expanded to file names, ``<``/``>`` are redirections); comments excluded."""
    found: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = ""
        elif ch == "\\":
            i += 1
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif ch in specials:
            found.append(ch)
        i += 1
    return found


def test_unquoted_finds_what_the_shell_would_expand() -> None:
    assert unquoted("entrepot cache create -s docker.io/library/* -t hub/*") == ["*", "*"]
    assert unquoted("entrepot vault grant v --principal <that principalId>") == ["<", ">"]
    assert unquoted("entrepot cache create -s 'docker.io/library/*' -t \"hub/*\"") == []
    assert unquoted("entrepot cache list --query '[].name'  # [] and * in a comment") == []


def test_readme_shell_examples_are_copy_paste_correct() -> None:
    """Every line of every ``sh`` block runs as written: no wildcard the shell would expand
    against the files of the current directory, no ``<placeholder>`` it would take for a
    redirection."""
    checked = 0
    for section, language, code in readme_blocks():
        if language != "sh":
            continue
        for line in logical_lines(code):
            assert unquoted(line) == [], f"README, {section}: quote this line: {line}"
            checked += "entrepot " in line
    assert checked >= 15


def test_readme_says_how_to_get_the_cli() -> None:
    setup = "\n".join(code for sec, lang, code in readme_blocks() if sec.startswith("Set-up"))
    assert "scripts/entrepot status" in setup
    assert ". .venv/bin/activate" in setup  # POSIX sh: `.`, not `source`
    text = README.read_text(encoding="utf-8")
    assert "`-g/--resource-group` defaults to `default`" in text


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A working directory with files that unquoted wildcards of the examples would match."""
    work = tmp_path / "work"
    for name in ("hub/notes.txt", "quay/notes.txt", "docker.io/library/notes.txt", "quay.io/x"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("not an image\n")
    return work


def run_shell_block(code: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a README ``sh`` block with bash, stopping at the first failing command."""
    bin_dir = cwd.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "entrepot").exists():
        (bin_dir / "entrepot").symlink_to(ENTREPOT_SCRIPT)
    full_env = clean_env(**env)
    full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{code}\n{result.stderr}"
    assert "error:" not in result.stderr
    return result.stdout


def test_readme_walkthrough_runs_as_written(
    user_dir: Path,
    server_factory: Callable[..., ServerProcess],
    basic_registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Quick start, the SDK examples, the CLI examples and the vault walk-through, run in
    order as a new user would: the shell blocks with bash in a directory where unquoted
    wildcards would match files, the Python blocks in-process. Only the server's address
    differs (``127.0.0.1:5000`` becomes the test server's), and ``quay.io`` is a real local
    registry with Basic auth."""
    server = server_factory(extra=f'[upstreams."quay.io"]\nurl = "{basic_registry.url}"\n')
    (user_dir / "entrepot-data").symlink_to(server.data_dir)  # as if serving from here
    env = {"ENTREPOT_URL": server.url}

    def local(code: str) -> str:
        return code.replace("http://127.0.0.1:5000", server.url)

    run_shell_block(local(block("Quick start", "sh")), user_dir, env)
    rules = json.loads(
        ok(cli("cache", "list", "-r", "myregistry", "-g", "my-group", env=env, cwd=user_dir))
    )
    by_name = {r["name"]: r for r in rules}
    assert by_name["hub-library"]["sourceRepository"] == "docker.io/library/*"
    assert by_name["hub-library"]["targetRepository"] == "hub/*"
    assert by_name["quay-all"]["targetRepository"] == "quay/*"
    assert by_name["quay-all"]["credentialSetResourceId"].endswith("/credentialSets/quay-creds")
    # Created before its secrets exist: Unhealthy until they do (as the README says).
    shown = json.loads(
        ok(
            cli(
                "credential-set",
                "show",
                "-n",
                "quay-creds",
                "-r",
                "myregistry",
                "-g",
                "my-group",
                env=env,
                cwd=user_dir,
            )
        )
    )
    health = shown["authCredentials"][0]["credentialHealth"]
    assert (health["status"], health["errorCode"]) == ("Unhealthy", "SecretNotFound")

    # The Python blocks, in one namespace, from the same directory.
    monkeypatch.chdir(user_dir)
    namespace: dict[str, Any] = {}
    ours, genuine, null_body = (block("Quick start", "python", i) for i in range(3))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(local(ours), "README ours", "exec"), namespace)
        exec(compile(local(genuine), "README genuine", "exec"), namespace)
    assert "ubuntu Succeeded" in out.getvalue()
    assert "quay-busybox /subscriptions/" in out.getvalue()

    # What the README says of None: the genuine SDK leaves it out, so nothing changes ...
    from azure.mgmt.containerregistry.models import CacheRuleUpdateParameters

    client = namespace["client"]
    unchanged = client.cache_rules.begin_update(
        "my-group",
        "myregistry",
        "quay-busybox",
        CacheRuleUpdateParameters(credential_set_resource_id=None),
    ).result()
    assert unchanged.credential_set_resource_id.endswith("/credentialSets/quay-creds")
    # ... and JSON null, sent as the README shows, removes the credential set.
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(local(null_body), "README null", "exec"), namespace)
    assert out.getvalue().strip() == "quay-busybox None"
    rule = client.cache_rules.get("my-group", "myregistry", "quay-busybox")
    assert rule.credential_set_resource_id is None

    stdout = run_shell_block(local(block("The command line", "sh")), user_dir, env)
    assert "hub-library\n" in stdout
    assert "quay-busybox\n" in stdout
    assert re.search(r"hub-library\s+docker\.io/library/\*\s+hub/\*", stdout)

    user, password = basic_registry.credentials
    vault_env = {**env, "QUAY_USER": user, "QUAY_PASSWORD": password}
    section = "Secrets, grants and credential health"
    stdout = run_shell_block(local(block(section, "sh")), user_dir, vault_env)
    validated = json.loads(stdout[stdout.rindex('{\n  "authCredentials"') :])
    assert validated["authCredentials"][0]["credentialHealth"]["status"] == "Healthy"


def test_scripts_entrepot_runs_the_cli(tmp_path: Path) -> None:
    """``scripts/entrepot`` is the CLI of the project's virtualenv (here: the one running the
    tests, already installed, so the wrapper installs nothing)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "entrepot").symlink_to(ENTREPOT_SCRIPT)
    (venv / ".entrepot-installed").touch()  # newer than pyproject.toml: no reinstall
    result = subprocess.run(
        [str(ROOT / "scripts" / "entrepot"), "--version"],
        env=clean_env(ENTREPOT_VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok(result) == f"entrepot {version('entrepot')}\n"
    help_text = subprocess.run(
        [str(ROOT / "scripts" / "entrepot"), "cache", "list", "--help"],
        env=clean_env(ENTREPOT_VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Usage: entrepot cache list" in ok(help_text)


# -- connection options, errors ------------------------------------------------------------------
def test_version() -> None:
    assert ok(cli("--version")) == f"entrepot {version('entrepot')}\n"


def test_url_token_and_data_dir_flags(server: ServerProcess, tmp_path: Path) -> None:
    """With no environment at all, the flags alone find and authenticate the server."""
    listed = json.loads(
        ok(cli("registry", "list", *WHERE[2:], "--url", server.url, "--token", server.token))
    )
    assert REGISTRY in [r["name"] for r in listed]
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    ok(
        cli(
            "registry",
            "show",
            "-n",
            REGISTRY,
            *WHERE[2:],
            "--url",
            server.url,
            "--token-file",
            str(token_file),
        )
    )
    # --data-dir: the admin-token file the server wrote there
    ok(cli("cache", "list", *WHERE, "--url", server.url, "--data-dir", str(server.data_dir)))
    # flags win over the environment
    env = {"ENTREPOT_URL": "http://127.0.0.1:9", "ENTREPOT_TOKEN": "wrong"}
    ok(cli("cache", "list", *WHERE, "--url", server.url, "--token", server.token, env=env))
    ok(
        cli(
            "cache",
            "list",
            *WHERE,
            "--url",
            server.url,
            "--data-dir",
            str(server.data_dir),
            env=env,
        )
    )
    # the vault commands take the same options
    ok(cli("vault", "list", "--url", server.url, "--token-file", str(token_file)))


def test_authentication_errors_say_where_the_token_came_from(
    server: ServerProcess, tmp_path: Path
) -> None:
    bad = "not-the-token-123"
    errors = []
    stderr = failed(cli("cache", "list", *WHERE, "--url", server.url, "--token", bad), 1)
    assert "(InvalidAuthenticationToken)" in stderr
    assert stderr.rstrip().endswith("The token came from --token.")
    errors.append(stderr)
    env = {"ENTREPOT_URL": server.url, "ENTREPOT_TOKEN": bad}
    stderr = failed(cli("cache", "list", *WHERE, env=env), 1)
    assert stderr.rstrip().endswith("The token came from ENTREPOT_TOKEN.")
    errors.append(stderr)
    token_file = tmp_path / "stale-token"
    token_file.write_text(bad)
    stderr = failed(
        cli("cache", "list", *WHERE, "--url", server.url, "--token-file", str(token_file)), 1
    )
    assert stderr.rstrip().endswith(f"The token came from --token-file {token_file}.")
    errors.append(stderr)
    data_dir = tmp_path / "other-data"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text(bad)
    stderr = failed(cli("secret", "list", "v", "--url", server.url, "--data-dir", str(data_dir)), 1)
    assert stderr.rstrip().endswith(
        f"The token came from the admin token file {data_dir / 'admin-token'}."
    )
    errors.append(stderr)
    assert all(bad not in text and text.count("\n") == 1 for text in errors)


def test_server_down_is_reported_at_once(server: ServerProcess) -> None:
    """Connection refused: no retries with back-off (azure-core's defaults wait ~5 s), a
    message that says no server runs there and how to start one."""
    started = time.monotonic()
    ok(cli("status", env=as_server(server)))
    baseline = time.monotonic() - started
    down = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    stderr = failed(cli("status", "--url", down, "--token", "x"), 1)
    elapsed = time.monotonic() - started
    assert f"no entrepot server is running at {down} (connection refused)" in stderr
    assert "entrepot serve" in stderr
    assert elapsed < baseline + 2.0, f"took {elapsed:.1f}s (a successful call: {baseline:.1f}s)"
    stderr = failed(cli("cache", "show", "-n", "x-rule", *WHERE, "--url", down, "--token", "x"), 1)
    assert "connection refused" in stderr


def test_default_resource_group_is_in_the_help() -> None:
    text = ok(cli("cache", "list", "--help"))
    assert re.search(r"-g, --resource-group[^\n]*\n(?:[^\n]*\n)*?[^\n]*default: default\]", text)
    assert "-g/--resource-group (default: 'default'" in ok(cli("--help"))


# -- status --------------------------------------------------------------------------------------
def _populate(server: ServerProcess) -> None:
    env = as_server(server)
    ok(cli("registry", "create", "-n", "status-two", "-g", "rg-two", env=env))
    ok(
        cli(
            "credential-set",
            "create",
            "-n",
            "status-set",
            "-r",
            "status-two",
            "-g",
            "rg-two",
            "-l",
            "quay.io",
            "-u",
            "https://status-vault.vault.azure.net/secrets/u",
            "-p",
            "https://status-vault.vault.azure.net/secrets/p",
            env=env,
        )
    )
    for name, target in (("status-a", "a"), ("status-b", "b")):
        ok(
            cli(
                "cache",
                "create",
                "-n",
                name,
                "-r",
                "status-two",
                "-g",
                "rg-two",
                "-s",
                f"docker.io/library/{target}",
                "-t",
                target,
                env=env,
            )
        )


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_status(
    kind: str, server_factory: Callable[..., ServerProcess], request: pytest.FixtureRequest
) -> None:
    extra = ""
    if kind == "postgresql":
        extra = f'[database]\nurl = "{request.getfixturevalue("postgres_database")}"\n'
    server = server_factory(extra=extra)
    _populate(server)
    shown = json.loads(ok(cli("status", env=as_server(server))))
    root = str(server.data_dir / "content")
    assert shown == {
        "url": server.url,
        "version": version("entrepot"),
        "database": kind,
        "registries": 2,
        "cacheRules": 2,
        "credentialSets": 1,
        "cache": {"repositories": 0, "manifests": 0, "tags": 0, "blobs": 0, "blobBytes": 0},
        "storage": {"driver": "filesystem", "root": root},
    }
    # a table lists the figures top to bottom, the cache's and the store's included
    table = ok(cli("status", "-o", "table", env=as_server(server))).splitlines()
    assert table[0].split() == ["Property", "Value"]
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in table[2:])
    assert rows == {
        "Server": server.url,
        "Version": version("entrepot"),
        "Database": kind,
        "Registries": "2",
        "Cache rules": "2",
        "Credential sets": "1",
        "Cached repositories": "0",
        "Cached manifests": "0",
        "Cached tags": "0",
        "Cached blobs": "0",
        "Cached blob size": "0 B (0 bytes)",
        "Storage driver": "filesystem",
        "Storage root": root,
    }
    # --query picks a part, as everywhere
    cache = json.loads(ok(cli("status", "--query", "cache", env=as_server(server))))
    assert cache["blobs"] == 0 and set(cache) == {
        "repositories",
        "manifests",
        "tags",
        "blobs",
        "blobBytes",
    }
    # The endpoint behind it needs the token, like every management route.
    response = requests.get(f"{server.url}/entrepot/status", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    response = requests.get(f"{server.url}/entrepot/status", headers=server.headers(), timeout=10)
    assert response.status_code == 200
    assert response.json()["database"] == kind


# -- output: tsv and --query ---------------------------------------------------------------------
def test_tsv_and_query(server: ServerProcess) -> None:
    env = as_server(server)
    for name, source, target in (
        ("tsv-rule-one", "docker.io/library/alpine", "tsv/alpine"),
        ("tsv-rule-two", "quay.io/coreos/*", "tsv/coreos/*"),
    ):
        ok(cli("cache", "create", "-n", name, *WHERE, "-s", source, "-t", target, env=env))
    names = ok(cli("cache", "list", *WHERE, "--query", "[].name", "-o", "tsv", env=env))
    assert {"tsv-rule-one", "tsv-rule-two"} <= set(names.splitlines())
    row = ok(
        cli(
            "cache",
            "list",
            *WHERE,
            "-o",
            "tsv",
            "--query",
            "[?name=='tsv-rule-two'].[name, sourceRepository, credentialSetResourceId]",
            env=env,
        )
    )
    assert row == "tsv-rule-two\tquay.io/coreos/*\t\n"
    # -o tsv of a whole object: its plain values in key order, nested objects left out
    shown = json.loads(ok(cli("cache", "show", "-n", "tsv-rule-one", *WHERE, env=env)))
    line = ok(cli("cache", "show", "-n", "tsv-rule-one", *WHERE, "-o", "tsv", env=env))
    expected = [
        "" if v is None else str(v) for v in shown.values() if not isinstance(v, dict | list)
    ]
    assert line == "\t".join(expected) + "\n"
    # --query with json, yaml and table
    assert (
        json.loads(
            ok(
                cli(
                    "cache",
                    "show",
                    "-n",
                    "tsv-rule-one",
                    *WHERE,
                    "--query",
                    "targetRepository",
                    env=env,
                )
            )
        )
        == "tsv/alpine"
    )
    table = ok(
        cli(
            "cache",
            "list",
            *WHERE,
            "-o",
            "table",
            "--query",
            "[?starts_with(name, 'tsv-')].{Rule: name, To: targetRepository}",
            env=env,
        )
    ).splitlines()
    assert table[0].split() == ["Rule", "To"]
    assert ["tsv-rule-one", "tsv/alpine"] in [r.split() for r in table[2:]]
    # the vault commands too
    ok(cli("vault", "create", "tsv-vault", env=env))
    assert ok(cli("vault", "list", "--query", "[].name", "-o", "tsv", env=env)).split() == [
        "tsv-vault"
    ]


def test_malformed_query_is_refused_before_anything_is_sent(server: ServerProcess) -> None:
    stderr = failed(
        cli(
            "cache",
            "create",
            "-n",
            "never-created",
            *WHERE,
            "-s",
            "docker.io/library/x",
            "-t",
            "never",
            "--query",
            "[",
            env=as_server(server),
        ),
        2,
    )
    assert "--query: invalid JMESPath expression '['" in stderr
    assert stderr.count("\n") == 1
    assert failed(cli("cache", "show", "-n", "never-created", *WHERE, env=as_server(server)), 1)


# -- shell completion ----------------------------------------------------------------------------
def test_shell_completion() -> None:
    script = ok(cli("--show-completion", "bash"))
    assert "_ENTREPOT_COMPLETE=complete_bash" in script
    assert "complete -o default -F _entrepot_completion entrepot" in script
    completions = subprocess.run(
        [str(ENTREPOT_SCRIPT)],
        env=clean_env(
            _ENTREPOT_COMPLETE="complete_bash", COMP_WORDS="entrepot cache list -o ", COMP_CWORD="4"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok(completions).split() == ["json", "table", "tsv", "yaml"]
    assert "--install-completion" in ok(cli("--help"))


# -- help screens --------------------------------------------------------------------------------
def _all_commands() -> Iterator[list[str]]:
    import typer.main

    from entrepot.cli import app

    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_help_screens_show_no_type_for_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """No ``--help <bool>``: flags take no value, and their help says so by showing none."""
    from entrepot.cli import main

    commands = list(_all_commands())
    assert ["cache", "delete"] in commands
    assert ["serve"] in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith("Usage: entrepot"), command
        assert "<bool>" not in text, (command, text)
        assert re.search(r"^\s+--help\s+Show this message and exit\.$", text, re.MULTILINE)
        if command[-1:] == ["delete"] and command[0] in ("cache", "credential-set", "registry"):
            assert re.search(r"^\s+-y, --yes\s+Accepted for az", text, re.MULTILINE), text


def test_serve_help_describes_serve() -> None:
    text = " ".join(ok(cli("serve", "--help")).split())  # unwrapped
    assert "HOST:PORT to listen on; overrides server.listen (default 127.0.0.1:5000)" in text
    assert "admin-token" in text
    assert "server URL" not in text  # the client commands' --config wording
    assert "--url" not in text
    assert "--query" not in text


# -- serve: the database and the configuration ---------------------------------------------------
def serve_failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The error of an ``entrepot serve`` that failed: its last stderr line (the log lines of
    the start come before it), and no traceback."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    return last


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "entrepot.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_with_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://entrepot:hunter2@127.0.0.1:{port}/entrepot"
    result = serve(tmp_path, ENTREPOT_DATABASE_URL=url)
    stderr = serve_failed(result, 1)
    assert stderr.startswith(
        f"error: the database at postgresql://entrepot:***@127.0.0.1:{port}/entrepot is "
        "unreachable: "
    )
    assert "cannot serve on" not in stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.postgres
def test_serve_with_a_database_that_refuses_the_login(tmp_path: Path) -> None:
    from tests.conftest import POSTGRES_ADMIN_URL

    host = POSTGRES_ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    url = f"postgresql://no_such_role_x:hunter2@{host}/entrepot"
    result = serve(tmp_path, ENTREPOT_DATABASE_URL=url)
    stderr = serve_failed(result, 1)
    assert stderr.startswith(
        f"error: cannot open the database at postgresql://no_such_role_x:***@{host}/entrepot: "
    )
    assert "no_such_role_x" in stderr.split(": ", 2)[2]
    assert "hunter2" not in result.stdout + result.stderr


BAD_CONFIG = """
[server]
listen = 5000
bogus = 1

[arm]
page_size = 0

[nope]
x = 1

[[registries]]
name = "x"
"""


def test_config_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, env={"ENTREPOT_ARM_RETRY_AFTER": "soon"})
    problems = info.value.problems
    assert len(problems) == 6
    assert [p.split(":")[0] for p in problems] == [
        "[nope]",
        "server.listen",
        "server.bogus",
        "arm.retry_after",
        "registries[0].subscription",
        "arm.page_size",
    ]
    assert problems[0] == (
        "[nope]: unknown config section (known: arm, cache, database, health, policy, "
        "registries, registry, secrets, server, storage, upstreams)"
    )
    assert str(info.value).startswith("6 configuration errors:\n  [nope]: unknown")
    assert isinstance(info.value, ConfigError)
    # One problem: its message alone, as before.
    path.write_text("[arm]\npage_size = 0\n")
    with pytest.raises(ConfigError, match=r"^arm\.page_size: between 1 and 1000$"):
        load_config(path, env={})

    path.write_text(BAD_CONFIG)
    stderr = failed(serve(tmp_path, "--config", str(path)), 2)
    assert stderr.startswith("error: 5 configuration errors:\n")
    assert len(stderr.splitlines()) == 6
    for key in ("[nope]", "server.listen", "server.bogus", "registries[0]", "arm.page_size"):
        assert f"\n  {key}" in stderr


def test_several_registries_and_upstreams_errors_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[upstreams."docker.io"]\nurl = "ftp://mirror"\n[upstreams."quay.io"]\nurl = "http://"\n'
        '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "abc"\n'
        '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "my-registry"\n'
        '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "My-Registry"\n'
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, env={})
    assert [p.split(":")[0] for p in info.value.problems] == [
        'upstreams."docker.io".url',
        'upstreams."quay.io".url',
        "registries[0].name",
        "registries[2].name",
    ]
    assert "already the name of registries[1]" in info.value.problems[3]


# -- the SDK's loopback policy -------------------------------------------------------------------
def test_loopback_policy_allows_plain_http_to_loopback_only(server: ServerProcess) -> None:
    from azure.core.exceptions import ServiceRequestError
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    from entrepot.mgmt import (
        LoopbackARMChallengeAuthenticationPolicy,
        StaticTokenCredential,
        loopback_policy,
    )

    credential = StaticTokenCredential(server.token)
    policy = loopback_policy(credential)
    assert isinstance(policy, LoopbackARMChallengeAuthenticationPolicy)
    client = ContainerRegistryManagementClient(
        credential, SUBSCRIPTION, base_url=server.url, authentication_policy=policy
    )
    assert client.registries.get(RESOURCE_GROUP, REGISTRY).name == REGISTRY
    elsewhere = ContainerRegistryManagementClient(
        credential,
        SUBSCRIPTION,
        base_url="http://entrepot.example.invalid:5000",
        authentication_policy=loopback_policy(credential),
        retry_total=0,
    )
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        elsewhere.registries.get(RESOURCE_GROUP, REGISTRY)
