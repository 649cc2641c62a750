"""Settings: flags > ``WFE_SQLITE_*`` environment > TOML file > defaults; invalid ones stop start-up."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import WFE_SQLITE
from wfe_sqlite import cli
from wfe_sqlite._config import SETTINGS, ConfigError, ServerConfig, check, resolve


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WFE_SQLITE_"):
            monkeypatch.delenv(name)


def _resolve(argv: list[str], environ: dict[str, str]) -> ServerConfig:
    return resolve(cli._parser().parse_args(["serve", *argv]), environ)


def test_precedence_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config_file = tmp_path / "wfe.toml"
    config_file.write_text(
        'db = "sqlite://from-file.db"\nlisten = "127.0.0.1:7001"\ngrace = 3.5\nreaders = 2\n'
        'access_log = true\ntokens = ["file-token"]\n'
    )
    environ = {"WFE_SQLITE_LISTEN": "127.0.0.1:7002", "WFE_SQLITE_GRACE": "4", "WFE_SQLITE_CONFIG": str(config_file)}
    config = _resolve(["--grace", "5", "--no-access-log"], environ)
    assert config.grace == 5.0  # flag over environment over file
    assert config.access_log is False  # flag over file
    assert config.listen == "127.0.0.1:7002"  # environment over file
    assert (config.db, config.readers, config.tokens) == ("sqlite://from-file.db", 2, ("file-token",))  # file
    assert (config.synchronous, config.reflection, config.metrics_listen) == ("FULL", True, None)  # defaults
    assert _resolve([], {}) == ServerConfig()
    # --config names the file too, and wins over WFE_SQLITE_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text("readers = 7\n")
    assert _resolve(["--config", str(other)], environ).readers == 7


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["serve", "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert "--config" in shown and "WFE_SQLITE_CONFIG" in shown
    for setting in SETTINGS:
        assert setting.env in shown, setting.name
        assert setting.name in shown
        if setting.flag:
            assert setting.option in shown, setting.name
    assert "flags, then WFE_SQLITE_* environment variables, then the TOML file" in " ".join(shown.split())


@pytest.mark.parametrize(
    ("argv", "environ", "file_text", "setting"),
    [
        (["--grace", "-1"], {}, None, "grace"),
        (["--readers", "0"], {}, None, "readers"),
        ([], {"WFE_SQLITE_READERS": "many"}, None, "readers"),
        ([], {}, 'synchronous = "SOMETIMES"\n', "synchronous"),
        ([], {}, "port = 50051\n", "port"),
        ([], {}, "this is not toml", "config"),
        (["--listen", "::1:5"], {}, None, "listen"),
        (["--listen", "127.0.0.1:99999"], {}, None, "listen"),
        (["--db", "mysql://elsewhere"], {}, None, "db"),
        ([], {"WFE_SQLITE_ACCESS_LOG": "maybe"}, None, "access_log"),
        (["--log-format", "xml"], {}, None, "log_format"),
        (["--metrics-listen", "nowhere"], {}, None, "metrics_listen"),
        (["--tls-cert", "{tmp}/server.crt"], {}, None, "tls_key"),
        (["--tls-cert", "{tmp}/missing.crt", "--tls-key", "{tmp}/missing.key"], {}, None, "tls_cert"),
        (["--tls-client-ca", "{tmp}/ca.crt"], {}, None, "tls_client_ca"),
        (["--tokens-file", "{tmp}/empty-tokens"], {}, None, "tokens_file"),
        ([], {"WFE_SQLITE_TOKENS": "bad\u00e9token"}, None, "tokens"),
        (["--listen", "0.0.0.0:50051"], {}, None, "listen"),
        (["--max-page-count", "-1"], {}, None, "max_page_count"),
        ([], {"WFE_SQLITE_MAX_PAGE_COUNT": "lots"}, None, "max_page_count"),
        ([], {}, "max_page_count = 2.5\n", "max_page_count"),
        (["--retention", "30"], {}, None, "retention"),
        ([], {"WFE_SQLITE_RETENTION": "0d"}, None, "retention"),
        ([], {"WFE_SQLITE_RETENTION": ""}, None, "retention"),
        ([], {}, "retention = 30\n", "retention"),
    ],
)
def test_invalid_settings_stop_start_up_naming_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str],
    file_text: str | None,
    setting: str,
) -> None:
    (tmp_path / "empty-tokens").write_text("# nobody\n")
    (tmp_path / "server.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    if file_text is not None:
        (tmp_path / "wfe.toml").write_text(file_text)
        args += ["--config", str(tmp_path / "wfe.toml")]
    db = tmp_path / "wfe.db"
    assert cli.main(["serve", "--db", f"sqlite://{db}", *args] if setting != "db" else ["serve", *args]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"wfe-sqlite: invalid setting {setting}"), message
    assert not db.exists(), "nothing was opened"


@pytest.mark.parametrize("command", ["serve", "list"])
def test_an_unsupported_database_string_names_every_kind_accepted(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command, "--db", "mysql://elsewhere/wfe"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("wfe-sqlite: invalid setting db: unsupported database string 'mysql://elsewhere/wfe'")
    accepted = ("':memory:'", "'sqlite:///abs/path.db'", "'sqlite://relative/path.db'", "postgresql://", "postgres://")
    for form in accepted:  # the command line serves PostgreSQL too: the message must say so
        assert form in message, (form, message)


def test_retention_comes_from_flag_environment_or_file(tmp_path: Path) -> None:
    config_file = tmp_path / "wfe.toml"
    config_file.write_text('retention = "1d12h"\n')
    assert _resolve([], {}).retention is None  # off by default
    assert _resolve(["--config", str(config_file)], {}).retention == timedelta(days=1, hours=12)
    assert _resolve(["--config", str(config_file)], {"WFE_SQLITE_RETENTION": "90m"}).retention == timedelta(minutes=90)
    assert _resolve(["--retention", "30d"], {"WFE_SQLITE_RETENTION": "90m"}).retention == timedelta(days=30)
    check(ServerConfig(retention=timedelta(hours=12)))
    with pytest.raises(ConfigError) as invalid:
        check(ServerConfig(retention=timedelta(0)))
    assert invalid.value.setting == "retention"


def test_check_validates_configs_built_in_code() -> None:
    with pytest.raises(ConfigError) as invalid:
        check(ServerConfig(readers=0))
    assert invalid.value.setting == "readers"
    with pytest.raises(ConfigError) as exposed:
        check(ServerConfig(listen="[::]:50051"))
    assert exposed.value.setting == "listen"
    check(ServerConfig(listen="[::1]:0"))
    check(ServerConfig(listen="localhost:0"))
    check(ServerConfig(listen="0.0.0.0:0", tokens=("t",)))
    check(ServerConfig(listen="0.0.0.0:0", insecure=True))


def test_a_config_file_drives_a_real_server(tmp_path: Path) -> None:
    """File, environment and flag each give a setting the others do not override, as the rule says."""
    (tmp_path / "wfe.toml").write_text(
        'db = "sqlite://file.db"\nlisten = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\nlog_format = "json"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFE_SQLITE_")}
    env.update(WFE_SQLITE_CONFIG="wfe.toml", WFE_SQLITE_DB="sqlite://env.db", WFE_SQLITE_LOG_FORMAT="text")
    process = subprocess.Popen(
        [str(WFE_SQLITE), "serve", "--db", "sqlite://flag.db"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on 127.0.0.1:")  # file
        assert process.stdout.readline().startswith("metrics on http://127.0.0.1:")  # file
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert (tmp_path / "flag.db").exists()  # flag over environment over file
    assert not (tmp_path / "env.db").exists() and not (tmp_path / "file.db").exists()
    assert "INFO wfe_sqlite.server: serving sqlite://flag.db" in stderr  # text: environment over file


def test_max_page_count_is_a_setting_like_the_others(tmp_path: Path) -> None:
    """Flag, environment and file all reach it, with the same precedence; the default is no cap."""
    assert ServerConfig().max_page_count == 0
    config_file = tmp_path / "wfe.toml"
    config_file.write_text("max_page_count = 300\n")
    assert _resolve(["--config", str(config_file)], {}).max_page_count == 300
    assert _resolve(["--config", str(config_file)], {"WFE_SQLITE_MAX_PAGE_COUNT": "400"}).max_page_count == 400
    assert _resolve(["--max-page-count", "500"], {"WFE_SQLITE_MAX_PAGE_COUNT": "400"}).max_page_count == 500


async def test_max_page_count_caps_the_served_database(tmp_path: Path) -> None:
    """A server started with the setting (not the environment) refuses writes past the cap."""
    from wfe_client import GrpcPersistenceProvider, StorageFull, WorkflowInstance
    from wfe_sqlite.server import RunningServer

    running = await RunningServer.start(
        ServerConfig(db=f"sqlite://{tmp_path / 'capped.db'}", listen="127.0.0.1:0", max_page_count=64)
    )
    try:
        async with GrpcPersistenceProvider.connect(running.address) as client:
            await client.create_new_workflow(WorkflowInstance.new("small", 1, {"fits": True}))
            with pytest.raises(StorageFull):
                await client.create_new_workflow(WorkflowInstance.new("big", 1, {"blob": "x" * 1_000_000}))
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("db", "args", "setting"),
    [
        ("postgresql://wfe@127.0.0.1:1/wfe", ["--max-page-count", "10"], "max_page_count"),
        ("postgresql://wfe@127.0.0.1:1/wfe", ["--synchronous", "NORMAL"], "synchronous"),
        ("postgres://wfe@127.0.0.1:1/wfe", ["--readers", "8"], "readers"),
        ("sqlite://{tmp}/wfe.db", ["--pool-size", "4"], "pool_size"),
    ],
)
def test_a_setting_of_the_other_backend_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str, args: list[str], setting: str
) -> None:
    """A cap or a durability level that would silently do nothing on this backend stops start-up."""
    assert cli.main(["serve", "--db", db.replace("{tmp}", str(tmp_path)), *args]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"wfe-sqlite: invalid setting {setting}: applies to "), message
    assert "leave it out" in message and f"(from --{setting.replace('_', '-')})" in message, message
    assert not (tmp_path / "wfe.db").exists()


def test_a_default_value_of_the_other_backend_is_let_through(capsys: pytest.CaptureFixture[str]) -> None:
    """The same value as the default (a config file shared by both kinds of server) is no refusal:
    start-up goes on to connect (here to nothing)."""
    assert cli.main(["serve", "--db", "postgresql://wfe@127.0.0.1:1/wfe", "--synchronous", "FULL"]) == 2
    assert "cannot connect to PostgreSQL" in capsys.readouterr().err
