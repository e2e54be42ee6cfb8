"""Unit tests of :func:`entrepot.config.load_config`: sources, precedence and validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from entrepot.config import (
    Config,
    RegistrySeed,
    UpstreamEndpoint,
    database_url,
    load_config,
    mask_url,
    split_listen,
)
from entrepot.errors import ConfigError

FULL_TOML = """
[server]
listen = "0.0.0.0:6000"
allow_insecure_http = true   # off loopback without TLS (issue 7.9)
public_url = "https://cache.example.com"
data_dir = "/var/lib/entrepot"
log_level = "debug"

[database]
url = "postgresql://entrepot@db.example.com/entrepot"

[arm]
page_size = 25
retry_after = 3
max_rules_per_registry = 50
max_credential_sets_per_registry = 7
max_request_bytes = 2048
operation_min_seconds = 1.5
default_location = "westeurope"

[policy]
allowed_login_servers = ["docker.io", "*.example.com"]
require_docker_hub_credentials = true
forbid_private_addresses = true

[upstreams."Docker.IO"]
url = "http://127.0.0.1:5001/"

[upstreams."ghcr.io"]
url = "https://mirror.example.com:8443"

[[registries]]
subscription = "00000000-0000-0000-0000-000000000000"
resource_group = "my-resource-group"
name = "my-registry"

[[registries]]
subscription = "11111111-1111-1111-1111-111111111111"
resource_group = "Other_RG.(x)"
name = "Second-Registry"
location = "northeurope"
"""


def write(tmp_path: Path, text: str, name: str = "entrepot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(
    tmp_path: Path,
    toml: str | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> str:
    path = write(tmp_path, toml) if toml is not None else None
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, overrides=overrides)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------
def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.server.listen == "127.0.0.1:5000"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 5000)
    assert config.server.public_url == ""
    assert config.server.data_dir == "./entrepot-data"
    assert config.server.log_level == "info"
    assert config.data_dir == Path("entrepot-data")
    assert config.token_file == Path("entrepot-data") / "admin-token"
    assert config.database.url == ""
    expected_db = (tmp_path / "entrepot-data" / "entrepot.db").resolve()
    assert config.database_url == f"sqlite+aiosqlite:///{expected_db}"
    assert config.arm.page_size == 100
    assert config.arm.retry_after == 1
    assert config.arm.operation_min_seconds == 0.0
    assert config.arm.default_location == "local"
    assert config.policy.allowed_login_servers == ()
    assert config.policy.require_docker_hub_credentials is False
    assert config.policy.forbid_private_addresses is False
    assert dict(config.upstreams) == {}
    assert config.registries == ()
    assert config == Config()


def test_defaults_ignore_unrelated_environment(tmp_path: Path) -> None:
    env = {
        "ENTREPOT_URL": "http://elsewhere:1",  # client settings, not server config
        "ENTREPOT_TOKEN": "secret",
        "ENTREPOT_TEST_POSTGRES": "postgresql://x@y/z",
        "HOME": "/root",
    }
    assert load_config(env=env) == Config()


# -- the file ---------------------------------------------------------------------------------
def test_file_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML), env={})
    assert config.server.listen == "0.0.0.0:6000"
    assert (config.server.host, config.server.port) == ("0.0.0.0", 6000)
    assert config.server.public_url == "https://cache.example.com"
    assert config.data_dir == Path("/var/lib/entrepot")
    assert config.server.log_level == "debug"
    assert config.database_url == "postgresql+asyncpg://entrepot@db.example.com/entrepot"
    arm = config.arm
    assert (arm.page_size, arm.retry_after, arm.max_rules_per_registry) == (25, 3, 50)
    assert arm.max_credential_sets_per_registry == 7
    assert arm.max_request_bytes == 2048
    assert arm.operation_min_seconds == 1.5
    assert arm.default_location == "westeurope"
    assert config.policy.allowed_login_servers == ("docker.io", "*.example.com")
    assert config.policy.require_docker_hub_credentials is True
    assert config.policy.forbid_private_addresses is True
    assert dict(config.upstreams) == {
        "docker.io": UpstreamEndpoint("http://127.0.0.1:5001"),  # key lower-cased, "/" dropped
        "ghcr.io": UpstreamEndpoint("https://mirror.example.com:8443"),
    }
    assert config.registries == (
        RegistrySeed(
            "00000000-0000-0000-0000-000000000000", "my-resource-group", "my-registry", "local"
        ),
        RegistrySeed(
            "11111111-1111-1111-1111-111111111111",
            "Other_RG.(x)",
            "Second-Registry",
            "northeurope",
        ),
    )


def test_entrepot_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[arm]\npage_size = 7\n")
    assert load_config(env={"ENTREPOT_CONFIG": str(path)}).arm.page_size == 7
    # An explicit path wins over ENTREPOT_CONFIG.
    other = write(tmp_path, "[arm]\npage_size = 8\n", "other.toml")
    assert load_config(other, env={"ENTREPOT_CONFIG": str(path)}).arm.page_size == 8


def test_os_environ_is_the_default_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTREPOT_ARM_PAGE_SIZE", "42")
    assert load_config().arm.page_size == 42


# -- precedence -------------------------------------------------------------------------------
def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "ENTREPOT_SERVER_LISTEN": "127.0.0.1:7000",
        "ENTREPOT_SERVER_PUBLIC_URL": "http://other.example.com/prefix",
        "ENTREPOT_DATABASE_URL": "sqlite:////tmp/elsewhere.db",
        "ENTREPOT_ARM_PAGE_SIZE": " 50 ",
        "ENTREPOT_ARM_OPERATION_MIN_SECONDS": "0.25",
        "ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": "quay.io, ghcr.io ,",
        "ENTREPOT_POLICY_REQUIRE_DOCKER_HUB_CREDENTIALS": "false",
        "ENTREPOT_POLICY_FORBID_PRIVATE_ADDRESSES": "0",
    }
    config = load_config(write(tmp_path, FULL_TOML), env=env)
    assert config.server.listen == "127.0.0.1:7000"
    assert config.server.public_url == "http://other.example.com/prefix"
    assert config.database_url == "sqlite+aiosqlite:////tmp/elsewhere.db"
    assert config.arm.page_size == 50
    assert config.arm.operation_min_seconds == 0.25
    assert config.policy.allowed_login_servers == ("quay.io", "ghcr.io")
    assert config.policy.require_docker_hub_credentials is False
    assert config.policy.forbid_private_addresses is False
    # What the environment does not name keeps the file's value.
    assert config.arm.retry_after == 3
    assert config.server.data_dir == "/var/lib/entrepot"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("on", True), ("False", False), ("off", False)],
)
def test_booleans_from_the_environment(tmp_path: Path, text: str, expected: bool) -> None:
    env = {"ENTREPOT_POLICY_REQUIRE_DOCKER_HUB_CREDENTIALS": text}
    assert load_config(env=env).policy.require_docker_hub_credentials is expected


def test_lists_from_the_environment_may_be_json(tmp_path: Path) -> None:
    env = {"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": '["docker.io", "*.azurecr.io"]'}
    assert load_config(env=env).policy.allowed_login_servers == ("docker.io", "*.azurecr.io")


def test_explicit_overrides_win_over_the_environment(tmp_path: Path) -> None:
    env = {"ENTREPOT_SERVER_LISTEN": "127.0.0.1:7000", "ENTREPOT_SERVER_DATA_DIR": "/env/dir"}
    config = load_config(
        write(tmp_path, FULL_TOML),
        env=env,
        overrides={"server.listen": "127.0.0.1:8000", "server.data_dir": None},
    )
    assert config.server.listen == "127.0.0.1:8000"
    assert config.server.data_dir == "/env/dir"  # a None override leaves the value alone
    config = load_config(env=env, overrides={"server.data_dir": "/cli/dir"})
    assert config.server.data_dir == "/cli/dir"
    assert config.server.listen == "127.0.0.1:7000"


# -- invalid configurations -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[server]\nlisten = "nonsense"\n', "server.listen"),
        ('[server]\nlisten = "127.0.0.1:99999"\n', "server.listen"),
        ('[server]\nlisten = "127.0.0.1"\n', "server.listen"),
        ("[server]\nlisten = 5000\n", "server.listen"),
        ("[bogus]\nx = 1\n", "bogus"),
        ("server = 5\n", "[server]"),
        ("[server]\nbogus = 1\n", "server.bogus"),
        ('[arm]\npage_size = "ten"\n', "arm.page_size"),
        ("[arm]\npage_size = true\n", "arm.page_size"),
        ("[arm]\npage_size = 1.5\n", "arm.page_size"),
        ('[arm]\noperation_min_seconds = "soon"\n', "arm.operation_min_seconds"),
        (
            '[policy]\nrequire_docker_hub_credentials = "yes"\n',
            "policy.require_docker_hub_credentials",
        ),
        ("[policy]\nallowed_login_servers = [1, 2]\n", "policy.allowed_login_servers"),
        ('[policy]\nallowed_login_servers = ["Docker.IO/x"]\n', "policy.allowed_login_servers"),
        ("[arm]\npage_size = 0\n", "arm.page_size"),
        ("[arm]\npage_size = 1001\n", "arm.page_size"),
        ("[arm]\nretry_after = -1\n", "arm.retry_after"),
        ("[arm]\nmax_rules_per_registry = 0\n", "arm.max_rules_per_registry"),
        ("[arm]\nmax_request_bytes = 10\n", "arm.max_request_bytes"),
        ("[arm]\noperation_min_seconds = 3601\n", "arm.operation_min_seconds"),
        ('[server]\nlog_level = "loud"\n', "server.log_level"),
        ('[server]\npublic_url = "entrepot.example.com"\n', "server.public_url"),
        ('[server]\npublic_url = "ftp://entrepot.example.com"\n', "server.public_url"),
        ('[server]\npublic_url = "https://entrepot.example.com/?a=b"\n', "server.public_url"),
        ('[database]\nurl = "mysql://root:hunter2@db/entrepot"\n', "database.url"),
        ('[upstreams."docker.io"]\nurl = "ftp://mirror"\n', 'upstreams."docker.io".url'),
        ('[upstreams."docker.io"]\nurl = "http://"\n', 'upstreams."docker.io".url'),
        ('[upstreams."docker.io"]\nurl = "http://m"\nx = 1\n', 'upstreams."docker.io"'),
        ('[upstreams."docker.io"]\nhost = "http://m"\n', 'upstreams."docker.io"'),
        ('upstreams = "docker.io"\n', "[upstreams]"),
        ('[registries]\nname = "x"\n', "registries"),
        (
            '[[registries]]\nresource_group = "rg"\nname = "my-registry"\n',
            "registries[0].subscription",
        ),
        (
            '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "abc"\n',
            "registries[0].name",
        ),
        (
            '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "my_registry"\n',
            "registries[0].name",
        ),
        (
            '[[registries]]\nsubscription = "s"\nresource_group = "r g"\nname = "my-registry"\n',
            "registries[0].resource_group",
        ),
        (
            '[[registries]]\nsubscription = "s/x"\nresource_group = "rg"\nname = "my-registry"\n',
            "registries[0].subscription",
        ),
        (
            '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "my-registry"\n'
            '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = "my-registry"\n'
            'colour = "blue"\n',
            "registries[1]",
        ),
        (
            '[[registries]]\nsubscription = "s"\nresource_group = "rg"\nname = 12345\n',
            "registries[0].name",
        ),
    ],
)
def test_invalid_file_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    assert key in error_of(tmp_path, toml)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ENTREPOT_SERVER_LISTEN": "localhost"}, "server.listen"),
        ({"ENTREPOT_SERVER_BOGUS": "1"}, "ENTREPOT_SERVER_BOGUS"),
        ({"ENTREPOT_ARM_PAGE_SIZE": "ten"}, "arm.page_size"),
        ({"ENTREPOT_ARM_PAGE_SIZE": "0"}, "arm.page_size"),
        ({"ENTREPOT_ARM_PAGE_SIZE": "1.0"}, "arm.page_size"),
        ({"ENTREPOT_ARM_OPERATION_MIN_SECONDS": "soon"}, "arm.operation_min_seconds"),
        (
            {"ENTREPOT_POLICY_REQUIRE_DOCKER_HUB_CREDENTIALS": "maybe"},
            "policy.require_docker_hub_credentials",
        ),
        ({"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": "[docker.io"}, "policy.allowed_login_servers"),
        ({"ENTREPOT_POLICY_ALLOWED_LOGIN_SERVERS": "[1]"}, "policy.allowed_login_servers"),
        ({"ENTREPOT_SERVER_PUBLIC_URL": "https://x.example.com?y=1"}, "server.public_url"),
        ({"ENTREPOT_DATABASE_URL": "oracle://scott@db/x"}, "database.url"),
    ],
)
def test_invalid_environment_values_name_the_key(
    tmp_path: Path, env: dict[str, str], key: str
) -> None:
    assert key in error_of(tmp_path, env=env)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"server.listen": "nope"}, "server.listen"),
        ({"server.nope": "x"}, "server.nope"),
        ({"nope.listen": "x"}, "nope.listen"),
        ({"server.data_dir": 5}, "server.data_dir"),
    ],
)
def test_invalid_overrides_name_the_key(
    tmp_path: Path, overrides: dict[str, object], key: str
) -> None:
    assert key in error_of(tmp_path, overrides=overrides)


def test_unknown_key_lists_the_known_keys(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[arm]\npagesize = 10\n")
    assert message.startswith("arm.pagesize: unknown key")
    assert "page_size" in message


def test_database_scheme_error_masks_the_password(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[database]\nurl = "mysql://root:hunter2@db/entrepot"\n')
    assert "database.url" in message
    assert "hunter2" not in message
    assert "root:***@db" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*does not exist"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={"ENTREPOT_CONFIG": str(path)})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nlisten = \n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*not valid TOML"):
        load_config(path, env={})


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path, env={})  # a directory


# -- helpers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]:5001", ("::1", 5001)),
        (":5002", ("0.0.0.0", 5002)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_split_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["::1:5000", "host:", "host:port", "a:1:2", "[::1]"])
def test_split_listen_rejects(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.listen"):
        split_listen(listen)


def test_database_url_normalisation(tmp_path: Path) -> None:
    assert database_url("", tmp_path) == f"sqlite+aiosqlite:///{tmp_path.resolve()}/entrepot.db"
    assert database_url("postgres://u@h/d", tmp_path) == "postgresql+asyncpg://u@h/d"
    assert database_url("postgresql://u@h/d", tmp_path) == "postgresql+asyncpg://u@h/d"
    assert database_url("postgresql+asyncpg://u@h/d", tmp_path) == "postgresql+asyncpg://u@h/d"
    assert database_url("sqlite:///rel/x.db", tmp_path) == "sqlite+aiosqlite:///rel/x.db"
    assert database_url("sqlite:////abs/x.db", tmp_path) == "sqlite+aiosqlite:////abs/x.db"
    with pytest.raises(ConfigError, match=r"database\.url"):
        database_url("sqlite://relative-without-third-slash", tmp_path)


def test_sanitized_masks_passwords(tmp_path: Path) -> None:
    toml = FULL_TOML.replace(
        "postgresql://entrepot@db.example.com/entrepot",
        "postgresql://entrepot:s3cr%40t:pw@db.example.com:5432/entrepot",
    ).replace("http://127.0.0.1:5001/", "http://mirror:m1rr0rpw@127.0.0.1:5001/")
    config = load_config(write(tmp_path, toml), env={})
    assert "s3cr%40t" in config.database.url  # the config itself keeps the password ...
    data = config.sanitized()
    text = json.dumps(data)  # ... its sanitized form is plain data without it
    assert "s3cr" not in text and ":pw@" not in text
    assert "m1rr0rpw" not in text
    assert (
        data["database"]["url"] == "postgresql+asyncpg://entrepot:***@db.example.com:5432/entrepot"
    )
    assert data["upstreams"]["docker.io"] == "http://mirror:***@127.0.0.1:5001"
    assert data["server"]["listen"] == "0.0.0.0:6000"
    assert data["arm"]["page_size"] == 25
    assert data["policy"]["allowed_login_servers"] == ["docker.io", "*.example.com"]
    assert data["registries"][1]["name"] == "Second-Registry"


def test_mask_url_leaves_urls_without_password_alone() -> None:
    assert mask_url("postgresql://user@db/x") == "postgresql://user@db/x"
    assert (
        mask_url("sqlite+aiosqlite:////data/entrepot.db") == "sqlite+aiosqlite:////data/entrepot.db"
    )
    assert mask_url("postgresql://user:pw@db/x") == "postgresql://user:***@db/x"


# -- registry addressing ([server] registry_domain, default_registry) ---------------------------
def test_registry_addressing_keys(tmp_path: Path) -> None:
    assert (Config().server.registry_domain, Config().server.default_registry) == ("", "")
    toml = '[server]\nregistry_domain = "Cache.Example.com"\ndefault_registry = "My-Registry"\n'
    server = load_config(write(tmp_path, toml), env={}).server
    assert (server.registry_domain, server.default_registry) == ("Cache.Example.com", "My-Registry")
    env = {
        "ENTREPOT_SERVER_REGISTRY_DOMAIN": "localhost",
        "ENTREPOT_SERVER_DEFAULT_REGISTRY": "other-registry",
    }
    server = load_config(write(tmp_path, toml), env=env).server
    assert (server.registry_domain, server.default_registry) == ("localhost", "other-registry")
    data = load_config(write(tmp_path, toml), env={}).sanitized()
    assert data["server"]["registry_domain"] == "Cache.Example.com"
    assert data["server"]["default_registry"] == "My-Registry"
    for valid in ("a.b", "x-1.example.com", "cache.example.com", "a" * 63 + ".example"):
        load_config(env={"ENTREPOT_SERVER_REGISTRY_DOMAIN": valid})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("registry_domain", "https://cache.example.com"),
        ("registry_domain", "cache.example.com:443"),
        ("registry_domain", "*.cache.example.com"),
        ("registry_domain", ".cache.example.com"),
        ("registry_domain", "cache.example.com."),
        ("registry_domain", "cache..example.com"),
        ("registry_domain", "-cache.example.com"),
        ("registry_domain", "cache_1.example.com"),
        ("registry_domain", "cache.example.com/v2"),
        ("registry_domain", "127.0.0.1"),
        ("registry_domain", "[::1]"),
        ("registry_domain", "a" * 64 + ".example.com"),
        ("registry_domain", ("abcdefghi." * 20) + "com"),
        ("default_registry", "abc"),
        ("default_registry", "my_registry"),
        ("default_registry", "my.registry"),
        ("default_registry", "r" * 51),
    ],
)
def test_invalid_registry_addressing_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    message = error_of(tmp_path, f"[server]\n{key} = {json.dumps(value)}\n")
    assert message.startswith(f"server.{key}: "), message
    assert repr(value) in message
    env_message = error_of(tmp_path, env={f"ENTREPOT_SERVER_{key.upper()}": value})
    assert env_message == message


# -- issue 7: passwords hidden in every spelling; [server] keys for serving ----------------------
@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pa/ss@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u:a:b/c@d@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("postgresql://u:p%40ss%2F@db/x", "postgresql://u:***@db/x"),
        (
            "postgresql://u@db/x?sslmode=disable&password=pa/ss@w&PassWord=x",
            "postgresql://u@db/x?sslmode=disable&password=***&PassWord=***",
        ),
        ("postgresql://u@db/x?sslpassword=k3y", "postgresql://u@db/x?sslpassword=***"),
        ("http://mirror:pa/ss@127.0.0.1:5001", "http://mirror:***@127.0.0.1:5001"),
        ("mysql://root:hunter/2@db/x", "mysql://root:***@db/x"),
        ("postgresql://db/x", "postgresql://db/x"),
    ],
)
def test_mask_url_hides_passwords_with_slash_at_and_in_the_query(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_database_url_passes_raw_passwords_to_the_driver_encoded(tmp_path: Path) -> None:
    encoded = "postgresql+asyncpg://u:pa%2Fss%40w%3Ax@db:5432/x"
    assert database_url("postgresql://u:pa/ss@w:x@db:5432/x", tmp_path) == encoded
    assert database_url("postgresql://u:pa%2Fss%40w%3Ax@db:5432/x", tmp_path) == encoded
    assert database_url("postgresql+asyncpg://u:pa/ss@w:x@db:5432/x", tmp_path) == encoded
    with_query = "postgresql://u@db/x?password=p/w"
    assert database_url(with_query, tmp_path) == "postgresql+asyncpg://u@db/x?password=p/w"


def test_sanitized_hides_every_password_spelling(tmp_path: Path) -> None:
    for url in (
        "postgresql://entrepot:s3cr/t@P4ss@db/x",
        "postgresql://entrepot@db/x?password=s3cr%2Ft%40P4ss",
        "postgresql+asyncpg://entrepot:s3cr%2Ft@db/x",
    ):
        config = load_config(env={"ENTREPOT_DATABASE_URL": url})
        text = json.dumps(config.sanitized())
        assert "s3cr" not in text and "P4ss" not in text, text
    message = error_of(tmp_path, '[upstreams."docker.io"]\nurl = "ftp://u:s3cr/t@host"\n')
    assert "upstreams" in message and "s3cr" not in message


def test_serving_keys(tmp_path: Path) -> None:
    server = Config().server
    assert server.trusted_proxies == ()
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (10.0, 60.0)
    assert server.shutdown_timeout_seconds == 5.0
    assert server.access_log == "text"
    assert (server.tls_cert, server.tls_key, server.allow_insecure_http) == ("", "", False)
    toml = """
[server]
listen = "127.0.0.1:5443"
trusted_proxies = ["10.0.0.5", "10.1.0.0/16", "fd00::/8"]
header_timeout_seconds = 2.5
body_timeout_seconds = 30
shutdown_timeout_seconds = 0
access_log = "json"
tls_cert = "/etc/entrepot/cert.pem"
tls_key = "/etc/entrepot/key.pem"
"""
    server = load_config(write(tmp_path, toml), env={}).server
    assert server.trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "fd00::/8")
    assert (server.header_timeout_seconds, server.body_timeout_seconds) == (2.5, 30.0)
    assert (server.shutdown_timeout_seconds, server.access_log) == (0.0, "json")
    assert server.base_url == "https://127.0.0.1:5443"  # TLS: the listen address over https
    data = load_config(write(tmp_path, toml), env={}).sanitized()
    assert data["server"]["trusted_proxies"] == ["10.0.0.5", "10.1.0.0/16", "fd00::/8"]
    env = {"ENTREPOT_SERVER_TRUSTED_PROXIES": "127.0.0.1, ::1", "ENTREPOT_SERVER_ACCESS_LOG": "off"}
    server = load_config(env=env).server
    assert (server.trusted_proxies, server.access_log) == (("127.0.0.1", "::1"), "off")
    assert server.base_url == "http://127.0.0.1:5000"
    public = load_config(env={**env, "ENTREPOT_SERVER_PUBLIC_URL": "https://c.example/"}).server
    assert public.base_url == "https://c.example"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ENTREPOT_SERVER_TRUSTED_PROXIES": "proxy.example"}, "server.trusted_proxies"),
        ({"ENTREPOT_SERVER_TRUSTED_PROXIES": "10.0.0.0/33"}, "server.trusted_proxies"),
        ({"ENTREPOT_SERVER_ACCESS_LOG": "xml"}, "server.access_log"),
        ({"ENTREPOT_SERVER_HEADER_TIMEOUT_SECONDS": "0"}, "server.header_timeout_seconds"),
        ({"ENTREPOT_SERVER_BODY_TIMEOUT_SECONDS": "-1"}, "server.body_timeout_seconds"),
        ({"ENTREPOT_SERVER_SHUTDOWN_TIMEOUT_SECONDS": "601"}, "server.shutdown_timeout_seconds"),
        ({"ENTREPOT_SERVER_TLS_CERT": "/c.pem"}, "server.tls_key"),
        ({"ENTREPOT_SERVER_TLS_KEY": "/k.pem"}, "server.tls_cert"),
        ({"ENTREPOT_SERVER_LISTEN": "0.0.0.0:5000"}, "server.allow_insecure_http"),
        ({"ENTREPOT_SERVER_LISTEN": "[::]:5000"}, "server.allow_insecure_http"),
        ({"ENTREPOT_SERVER_LISTEN": "192.168.1.10:5000"}, "server.allow_insecure_http"),
        ({"ENTREPOT_SERVER_LISTEN": "cache.example.com:5000"}, "server.allow_insecure_http"),
    ],
)
def test_serving_key_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert str(info.value).startswith(needle), str(info.value)


def test_listen_off_loopback(tmp_path: Path) -> None:
    for listen in ("127.0.0.1:5000", "127.9.9.9:1", "[::1]:5000", "localhost:5000"):
        assert load_config(env={"ENTREPOT_SERVER_LISTEN": listen}).server.listens_on_loopback
    allowed = {"ENTREPOT_SERVER_LISTEN": "0.0.0.0:5000", "ENTREPOT_SERVER_ALLOW_INSECURE_HTTP": "1"}
    server = load_config(env=allowed).server
    assert not server.listens_on_loopback and server.allow_insecure_http
    tls = {
        "ENTREPOT_SERVER_LISTEN": "0.0.0.0:5000",
        "ENTREPOT_SERVER_TLS_CERT": "/c.pem",
        "ENTREPOT_SERVER_TLS_KEY": "/k.pem",
    }
    assert load_config(env=tls).server.base_url == "https://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:a?b@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3cr?t/x@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
        ("postgres://u:S3cr?t#x@127.0.0.1/db", "postgres://u:***@127.0.0.1/db"),
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (
            "postgresql://u@h:5432/db?password=S3cr@tQ&sslmode=disable",
            "postgresql://u@h:5432/db?password=***&sslmode=disable",
        ),
    ],
)
def test_mask_url_hides_passwords_with_raw_delimiters(url: str, masked: str) -> None:
    """A password as people type it (raw ``?``, ``#``, ``/``, ``@``) is found whole; an ``@`` in a
    query value is not taken for the end of the user info."""
    assert mask_url(url) == masked
