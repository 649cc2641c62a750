"""Server settings: one table, read from flags, ``WFE_SQLITE_*`` environment variables and a TOML file.

Precedence, highest first: command-line flags, then environment variables, then the config file
(``--config`` or ``WFE_SQLITE_CONFIG``), then the defaults. Every setting has one name: the
``ServerConfig`` field, the TOML key, ``--the-name`` as a flag and ``WFE_SQLITE_THE_NAME`` in the
environment. A value that is invalid wherever it came from stops start-up with a ``ConfigError``
naming the setting and its source. An empty value (``WFE_SQLITE_TOKENS_FILE=``, ``--tls-cert ""``,
``tokens_file = ""``, ``tokens = []``, a token list of only commas) is such an invalid value: it
never silently switches off what another source configured (it once switched tokens off).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import ssl
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from ._connection import is_sqlite_url, parse_database_url
from ._postgres_store import check_postgres_url, is_postgres_url

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_DB",
    "DEFAULT_LISTEN",
    "ENV_PREFIX",
    "MAX_READERS",
    "SETTINGS",
    "ConfigError",
    "ServerConfig",
    "Setting",
    "add_arguments",
    "check",
    "environment_help",
    "is_loopback",
    "load_tokens",
    "parse_duration",
    "read_pem",
    "resolve",
    "split_host_port",
    "start_up_warnings",
    "tokens_source",
]

ENV_PREFIX = "WFE_SQLITE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEFAULT_DB = "sqlite://wfe.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
MAX_READERS = 64
"""Most read-only connections (each is a thread and a SQLite page cache)."""


class ConfigError(ValueError):
    """An invalid setting; the message names it (and where the value came from)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"invalid setting {setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server process is configured with. See ``SETTINGS`` for each one's meaning."""

    db: str = DEFAULT_DB
    """Database string: ``:memory:``, ``sqlite:///abs/path.db``, ``sqlite://relative/path.db``, or
    ``postgresql://user:pass@host:port/dbname`` (also ``postgres://``)."""
    listen: str = DEFAULT_LISTEN
    """HOST:PORT to listen on; port 0 picks a free port."""
    grace: float = 10.0
    """Seconds in-flight calls get to finish on shutdown."""
    readers: int = 4
    """Read-only SQLite connections (file databases), 1 to ``MAX_READERS``."""
    pool_size: int = 10
    """PostgreSQL connections this server process keeps (its pool); PostgreSQL databases only."""
    synchronous: str = "FULL"
    """``PRAGMA synchronous`` of the writer: FULL (power-loss safe) or NORMAL (process-crash safe)."""
    max_page_count: int = 0
    """Cap on the database size in pages (``PRAGMA max_page_count``); writes past it are STORAGE_FULL. 0: no cap."""
    reflection: bool = True
    """Serve gRPC server reflection."""
    tls_cert: str | None = None
    """PEM file of the server certificate chain; with ``tls_key`` the server speaks TLS only."""
    tls_key: str | None = None
    """PEM file of the server's private key."""
    tls_client_ca: str | None = None
    """PEM file of the CA(s) client certificates must chain to (mutual TLS); needs ``tls_cert``."""
    tokens_file: str | None = None
    """File of accepted bearer tokens, one per line (``#`` comments and blank lines ignored)."""
    tokens: tuple[str, ...] = ()
    """Accepted bearer tokens given directly (environment or config file; never a flag)."""
    insecure: bool = False
    """Allow a non-loopback ``listen`` address with neither TLS nor tokens."""
    metrics_listen: str | None = None
    """HOST:PORT of the Prometheus ``/metrics`` endpoint; None: no metrics."""
    console_listen: str | None = None
    """HOST:PORT of the read-only web console; None: no console. Loopback unless ``insecure``."""
    access_log: bool = False
    """Log one line per call (method, status, duration, peer) on the ``wfe_sqlite.access`` logger."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "text"
    """``text`` or ``json`` (one JSON object per line)."""
    max_connections: int = 1000
    """Most client connections open at once; more are closed as soon as they are accepted."""
    max_concurrent_streams: int = 10_000
    """Most calls in flight on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
    queues further calls until one finishes."""
    stream_idle_timeout: float = 60.0
    """Seconds a server stream (``BatchGetWorkflows``) waits for its client to take the next message;
    then the stream ends with DEADLINE_EXCEEDED (reason ``STREAM_IDLE``)."""
    keepalive_min_interval: float = 10.0
    """Shortest interval, in seconds, between HTTP/2 keepalive pings a client may send (with calls
    in flight or not); a client pinging more often is disconnected (GOAWAY ``too_many_pings``).
    Half the adapters' default ping interval (20 s), so their pings are always accepted."""
    requeue_interval: float = 2.0
    """Seconds between sweeps for stranded work (and how long handed-out work may stay unlocked)."""
    retention: timedelta | None = None
    """Purge COMPLETE and TERMINATED workflows finished longer ago than this, in the background;
    None (default): keep everything."""
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Where each setting that is not a default came from (``--flag``, environment variable or config
    file); filled in by ``resolve``. Not a setting itself."""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


# -- value parsers: raw text (flag, environment) or TOML value -> typed value, ValueError if invalid --


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _optional_text(value: Any) -> str | None:
    # Unset is None; an empty value is an error like any other invalid one, never "unset".
    return None if value is None else _text(value)


def _number(minimum: float, *, above: bool = False, maximum: float | None = None) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if (
            not (number > minimum if above else number >= minimum)
            or number == float("inf")
            or (maximum is not None and number > maximum)
        ):
            bounds = f"{'>' if above else '>='} {minimum:g}"
            if maximum is not None:
                bounds += f" and <= {maximum:g}"
            raise ValueError(f"must be a number {bounds}, got {value!r}")
        return number

    return parse


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value) if not isinstance(value, (bool, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise ValueError(f"must be an integer {bounds}, got {value!r}")
        return number

    return parse


def _choice(*choices: str, upper: bool) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip() if isinstance(value, str) else None
        text = text and (text.upper() if upper else text.lower())
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = timedelta(days=36500)


def parse_duration(value: Any) -> timedelta:
    """A positive duration written ``30d``, ``12h``, ``90m``, ``45s`` or combined (``1d12h``)."""
    if isinstance(value, timedelta):
        duration = value
    else:
        text = value.strip().lower() if isinstance(value, str) else ""
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"must be a duration such as 30d, 12h, 90m or 45s, got {value!r}")
        seconds = sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)
        if seconds > _LONGEST.total_seconds():
            raise ValueError(f"must be at most {_LONGEST.days}d, got {value!r}")
        duration = timedelta(seconds=seconds)
    if not timedelta(0) < duration <= _LONGEST:
        raise ValueError(f"must be a duration above 0 and at most {_LONGEST.days}d, got {value!r}")
    return duration


def _optional_duration(value: Any) -> timedelta | None:
    # Unset is None; an empty value is an error (parse_duration refuses it), never "unset".
    return None if value is None else parse_duration(value)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, got {value!r}")


def _address(value: Any) -> str:
    text = _text(value)
    split_host_port(text)
    return text


def _optional_address(value: Any) -> str | None:
    return None if _optional_text(value) is None else _address(value)


def _database(value: Any) -> str:
    text = _text(value)
    if is_postgres_url(text):
        return check_postgres_url(text)
    if not is_sqlite_url(text):
        # The embedded provider reads SQLite strings only; the command line also serves PostgreSQL.
        raise ValueError(
            f"unsupported database string {text!r}: use ':memory:', 'sqlite:///abs/path.db', "
            "'sqlite://relative/path.db' or 'postgresql://user:pass@host:port/dbname' (also postgres://)"
        )
    parse_database_url(text)
    return text


def _token_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise ValueError("must be a list of strings (or, in the environment, comma-separated)")
    if not items and value != ():  # () is the default: no tokens given at all
        raise ValueError("must name at least one token (leave the setting out for none)")
    for item in items:
        _check_token(item)
    return tuple(items)


def _check_token(token: str) -> None:
    if not token or any(not ("!" <= ch <= "~") for ch in token):
        raise ValueError("a token must be non-empty printable ASCII without spaces")


@dataclass(frozen=True)
class Setting:
    """One setting: its name (field, TOML key, flag, environment variable), parser and help."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    flag: bool = True
    """False for secrets: environment and config file only, never visible in a process list."""
    boolean: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "db",
        _database,
        "database: :memory:, sqlite:///abs/path.db, sqlite://relative/path.db "
        "or postgresql://user:pass@host:port/dbname (also postgres://)",
        "URL",
    ),
    Setting("listen", _address, "HOST:PORT to serve gRPC on; port 0 picks a free port", "HOST:PORT"),
    Setting("grace", _number(0), "seconds in-flight calls get to finish on shutdown", "SECONDS"),
    Setting("readers", _integer(1, MAX_READERS), f"read-only SQLite connections (1 to {MAX_READERS})", "N"),
    Setting("pool_size", _integer(1), "PostgreSQL connections of this server process (its pool)", "N"),
    Setting(
        "synchronous",
        _choice("FULL", "NORMAL", upper=True),
        "FULL: acknowledged writes survive power loss; NORMAL: they survive a process crash",
        "FULL|NORMAL",
    ),
    Setting(
        "max_page_count",
        _integer(0),
        "cap the database at N pages (PRAGMA max_page_count): writes past it fail with STORAGE_FULL; 0: no cap",
        "N",
    ),
    Setting("reflection", _boolean, "serve gRPC server reflection", boolean=True),
    Setting("tls_cert", _optional_text, "PEM server certificate (chain); enables TLS, needs --tls-key", "FILE"),
    Setting("tls_key", _optional_text, "PEM private key of --tls-cert, unencrypted", "FILE"),
    Setting(
        "tls_client_ca",
        _optional_text,
        "PEM CA bundle: require client certificates signed by it (mutual TLS); needs --tls-cert",
        "FILE",
    ),
    Setting(
        "tokens_file",
        _optional_text,
        "require 'authorization: Bearer TOKEN' on every call (health excepted); one token per line",
        "FILE",
    ),
    Setting(
        "tokens",
        _token_list,
        "accepted bearer tokens, comma-separated (environment or config file only)",
        flag=False,
    ),
    Setting(
        "insecure",
        _boolean,
        "allow a non-loopback --listen address with neither TLS nor tokens",
        boolean=True,
    ),
    Setting(
        "metrics_listen",
        _optional_address,
        "serve Prometheus metrics at http://HOST:PORT/metrics (unset: no metrics)",
        "HOST:PORT",
    ),
    Setting(
        "console_listen",
        _optional_address,
        "serve the read-only web console at http://HOST:PORT/ (unset: no console; loopback unless --insecure)",
        "HOST:PORT",
    ),
    Setting("access_log", _boolean, "log every call: method, status, duration, peer", boolean=True),
    Setting("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "log level", "LEVEL"),
    Setting(
        "log_format", _choice("text", "json", upper=False), "log format: text or json (one object a line)", "FORMAT"
    ),
    Setting(
        "max_connections",
        _integer(1, 1_000_000),
        "most client connections at once; further ones are closed when accepted",
        "N",
    ),
    Setting(
        "max_concurrent_streams",
        _integer(1, 1_000_000),
        "most calls in flight on one connection; a client queues the rest",
        "N",
    ),
    Setting(
        "stream_idle_timeout",
        _number(0, above=True),
        "seconds a server stream waits for its client to read before it is ended",
        "SECONDS",
    ),
    Setting(
        "keepalive_min_interval",
        # gRPC takes it in milliseconds as a 32-bit int: a larger value failed start-up with a traceback.
        _number(0, maximum=86_400),
        "shortest interval between client keepalive pings accepted; a client pinging more often is "
        "disconnected (GOAWAY too_many_pings)",
        "SECONDS",
    ),
    Setting(
        "requeue_interval",
        _number(0.1),
        "seconds between sweeps that queue stranded work again (due work in no queue and under no lock)",
        "SECONDS",
    ),
    Setting(
        "retention",
        _optional_duration,
        "purge COMPLETE and TERMINATED workflows finished longer ago than this (30d, 12h, 90m) in the background",
        "DURATION",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}
_DEFAULTS = {f.name: f.default for f in fields(ServerConfig) if f.name != "sources"}
assert set(_BY_NAME) == set(_DEFAULTS), "every ServerConfig field is a setting"


def _default_text(setting: Setting) -> str:
    default = _DEFAULTS[setting.name]
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    return f"{default:g}" if isinstance(default, float) else str(default)


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """``--config`` and a flag for each setting in ``names`` (default all); none has a default here."""
    parser.add_argument("--config", metavar="FILE", default=None, help=f"TOML file of settings (env {CONFIG_ENV})")
    for setting in SETTINGS if names is None else [_BY_NAME[name] for name in names]:
        if not setting.flag:
            continue
        text = f"{setting.help} (env {setting.env}; default {_default_text(setting)})"
        if setting.boolean:
            parser.add_argument(
                setting.option, dest=setting.name, default=None, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(setting.option, dest=setting.name, default=None, metavar=setting.metavar, help=text)


def environment_help() -> str:
    """The epilog of ``serve --help``: precedence, environment variables, config-file keys."""
    lines = [
        "Settings come from flags, then WFE_SQLITE_* environment variables, then the TOML file",
        f"named by --config or {CONFIG_ENV} (keys are the setting names below), then the defaults.",
        "",
        "setting / environment variable:",
    ]
    lines += [
        f"  {setting.name:<23} {setting.env}" + ("" if setting.flag else "   (no flag: a secret)")
        for setting in SETTINGS
    ]
    lines += ["", 'An empty value (VAR= or --flag "") is an error, never "unset".']
    return "\n".join(lines)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    for key in values:
        if key not in _BY_NAME:
            raise ConfigError(key, f"unknown setting in {path} (known: {', '.join(_BY_NAME)})")
    return values


def resolve(
    args: argparse.Namespace | None,
    environ: Mapping[str, str],
    names: Iterable[str] | None = None,
) -> ServerConfig:
    """The ``ServerConfig`` from flags > environment > config file > defaults, for ``names`` (default all).

    Raises ``ConfigError`` naming the first invalid setting and where its value came from.
    """
    wanted = list(_BY_NAME) if names is None else list(names)
    config_path = getattr(args, "config", None)
    config_source = "--config"
    if config_path is None and CONFIG_ENV in environ:
        config_path, config_source = environ[CONFIG_ENV], CONFIG_ENV
    if config_path is not None and not config_path.strip():
        raise ConfigError("config", f"must not be empty (from {config_source})")
    from_file = _read_file(config_path) if config_path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in wanted:
        setting = _BY_NAME[name]
        flag_value = getattr(args, name, None) if setting.flag else None
        if flag_value is not None:
            raw, source = flag_value, setting.option
        elif setting.env in environ:
            raw, source = environ[setting.env], setting.env
        elif name in from_file:
            raw, source = from_file[name], f"config file {config_path}"
        else:
            continue
        try:
            values[name] = setting.parse(raw)
        except ValueError as error:
            raise ConfigError(name, f"{error} (from {source})") from None
        sources[name] = source
    return ServerConfig(**values, sources=sources)


_SQLITE_ONLY = ("readers", "synchronous", "max_page_count")
_POSTGRES_ONLY = ("pool_size",)


def _check_backend_settings(config: ServerConfig) -> None:
    """Refuse a setting given a value other than its default for the other backend: a storage cap or
    a durability level that silently does nothing is worse than a refusal (a default value given,
    say from a config file shared by both kinds of server, is let through)."""
    postgres = is_postgres_url(config.db)
    for name in _SQLITE_ONLY if postgres else _POSTGRES_ONLY:
        if name in config.sources and getattr(config, name) != _DEFAULTS[name]:
            kind, other = ("SQLite", "a PostgreSQL") if postgres else ("PostgreSQL", "an SQLite")
            raise ConfigError(
                name,
                f"applies to {kind} databases only and db is {other} database: leave it out{_source(config, name)}",
            )


def check(config: ServerConfig) -> None:
    """Validate a whole config: each value, the files it names, and the rules between settings."""
    for setting in SETTINGS:
        try:
            setting.parse(getattr(config, setting.name))
        except ValueError as error:
            raise ConfigError(setting.name, str(error)) from None
    _check_backend_settings(config)
    if (config.tls_cert is None) != (config.tls_key is None):
        missing = "tls_key" if config.tls_key is None else "tls_cert"
        raise ConfigError(missing, "tls_cert and tls_key go together: give both or neither")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("tls_client_ca", "mutual TLS needs a server certificate too (tls_cert, tls_key)")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        if getattr(config, name) is not None:
            read_pem(config, name)
    if config.tls_cert is not None and config.tls_key is not None:
        _check_tls_files(config, config.tls_cert, config.tls_key)
    tokens = load_tokens(config)
    host, _ = split_host_port(config.listen)
    if not is_loopback(host) and not config.tls and not tokens and not config.insecure:
        raise ConfigError(
            "listen",
            f"{config.listen} is reachable from other hosts: serve it with TLS (--tls-cert, --tls-key) "
            "or tokens (--tokens-file, WFE_SQLITE_TOKENS), or pass --insecure to serve it unprotected",
        )
    if config.console_listen is not None:
        console_host, _ = split_host_port(config.console_listen)
        if not is_loopback(console_host) and not config.insecure:
            raise ConfigError(
                "console_listen",
                f"{config.console_listen} is reachable from other hosts and the console is plain HTTP "
                "(a token typed into it would cross the network in clear): keep it on loopback "
                "(and reach it through an SSH tunnel or a TLS proxy), or pass --insecure",
            )


def tokens_source(config: ServerConfig) -> str:
    """For the start-up log: where the accepted bearer tokens come from (never the tokens themselves)."""
    parts = []
    if config.tokens_file is not None:
        where = config.sources.get("tokens_file", "settings")
        parts.append(f"tokens_file {config.tokens_file} (set by {where})")
    if config.tokens:
        where = config.sources.get("tokens", "settings")
        parts.append(f"{len(config.tokens)} from tokens (set by {where})")
    if not parts:
        return "no bearer tokens: calls are not authenticated"
    return "bearer tokens required: " + ", ".join(parts)


def start_up_warnings(config: ServerConfig) -> list[str]:
    """Risky but valid settings, to be logged at start-up: secret files others can read, metrics off loopback."""
    found = []
    for name in ("tokens_file", "tls_key"):
        path = getattr(config, name)
        if path is None:
            continue
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue  # check() reports a file it cannot read
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            readers = " and ".join(w for w, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit)
            found.append(f"{name} {path} is readable by {readers} (mode {mode:04o}): chmod 600 {path}")
    if config.metrics_listen is not None:
        host, _ = split_host_port(config.metrics_listen)
        if not is_loopback(host):
            found.append(
                f"metrics_listen {config.metrics_listen} is reachable from other hosts: /metrics has no "
                "authentication and no TLS; keep it on loopback or a private network"
            )
    if config.console_listen is not None:
        host, _ = split_host_port(config.console_listen)
        if not is_loopback(host):
            found.append(
                f"console_listen {config.console_listen} is reachable from other hosts over plain HTTP "
                "(allowed by --insecure): anyone there can read the store"
                + (", and tokens typed into it cross the network in clear" if load_tokens(config) else "")
            )
    return found


def read_pem(config: ServerConfig, name: str) -> bytes:
    """The PEM bytes of the file named by setting ``name``."""
    path = getattr(config, name)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ConfigError(name, f"cannot read {path}: {error.strerror or error}{_source(config, name)}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(name, f"{path} is not a PEM file{_source(config, name)}")
    return data


class _Encrypted(Exception):
    """The private key asked for a passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _check_tls_files(config: ServerConfig, cert: str, key: str) -> None:
    """What gRPC would refuse with only ``Failed to bind`` (and lines of its own): a certificate file
    without a certificate, a key that is not the certificate's, an encrypted key, a client CA
    without a certificate. Checked with OpenSSL through ``ssl``, at security level 0 so that it
    judges the files, not the strength of their algorithms (which gRPC leaves alone too).
    """
    context = _tls_context()
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise ConfigError(
            "tls_key",
            f"{key} is an encrypted private key and gRPC takes no passphrase: decrypt it "
            f"(openssl pkey -in {key} -out PLAIN.key) and keep the copy private{_source(config, 'tls_key')}",
        ) from None
    except ssl.SSLError as error:
        raise _tls_key_pair_error(config, cert, key, error) from None
    if config.tls_client_ca is not None:
        problem = _certificate_problem(config.tls_client_ca)
        if problem is not None:
            raise ConfigError("tls_client_ca", f"{problem}{_source(config, 'tls_client_ca')}")


def _tls_key_pair_error(config: ServerConfig, cert: str, key: str, error: ssl.SSLError) -> ConfigError:
    """Why OpenSSL refused ``cert`` with ``key``, as the setting to blame."""
    if error.reason == "KEY_VALUES_MISMATCH":
        return ConfigError(
            "tls_key",
            f"the private key in {key} does not match the certificate in {cert}{_source(config, 'tls_key')}",
        )
    swapped = "; tls_cert and tls_key look swapped" if _holds(key, "a certificate") else ""
    problem = _certificate_problem(cert)
    if problem is not None:
        return ConfigError("tls_cert", f"{problem}{swapped}{_source(config, 'tls_cert')}")
    if not _holds(key, "a private key"):
        return ConfigError("tls_key", f"{key} holds {_kinds(key)}, not a private key{_source(config, 'tls_key')}")
    reason = error.reason or error.strerror or str(error)
    return ConfigError(
        "tls_key",
        f"cannot use the private key in {key} with the certificate in {cert} "
        f"(OpenSSL: {reason}){_source(config, 'tls_key')}",
    )


def _certificate_problem(path: str) -> str | None:
    """Why ``path`` holds no certificate OpenSSL can read; None when it holds one."""
    try:
        context = _tls_context()
        context.load_verify_locations(cafile=path)
        if context.cert_store_stats()["x509"]:
            return None
    except ssl.SSLError:
        pass
    if _holds(path, "a certificate"):
        return f"{path} holds no certificate that can be read (a damaged CERTIFICATE block?)"
    return f"{path} holds {_kinds(path)}, not a certificate"


def _tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # accept any key size and signature, as gRPC does
    return context


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def _kinds(path: str) -> str:
    """What the PEM blocks of ``path`` are, in words: ``a private key``, ``a certificate and a private key``."""
    try:
        with open(path, "rb") as handle:
            labels = _PEM_LABEL.findall(handle.read())
    except OSError:
        labels = []
    kinds: list[str] = []
    for label in labels:
        text = label.decode()
        if text.endswith("PRIVATE KEY"):
            kind = "a private key"
        elif text in ("CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CERTIFICATE"):
            kind = "a certificate"
        elif text in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
            kind = "a certificate request"
        else:
            kind = f"a {text} block"
        if kind not in kinds:
            kinds.append(kind)
    return " and ".join(kinds) or "no PEM block"


def _holds(path: str, kind: str) -> bool:
    return kind in _kinds(path).split(" and ")


def _source(config: ServerConfig, name: str) -> str:
    """`` (from --tls-cert)``: where setting ``name`` came from, when known."""
    source = config.sources.get(name)
    return f" (from {source})" if source else ""


def load_tokens(config: ServerConfig) -> frozenset[str]:
    """Every accepted bearer token: ``tokens`` plus the lines of ``tokens_file``."""
    tokens = set(config.tokens)
    if config.tokens_file is not None:
        path = config.tokens_file
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeError) as error:
            raise ConfigError(
                "tokens_file", f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
            ) from None
        found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        for number, token in enumerate(found, 1):
            try:
                _check_token(token)
            except ValueError as error:
                raise ConfigError("tokens_file", f"{path}: token {number}: {error}") from None
        if not found:
            raise ConfigError("tokens_file", f"{path} holds no token")
        tokens.update(found)
    return frozenset(tokens)


def split_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) as (host without brackets, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host goes in brackets ([::1]:PORT), got {address!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an empty host (every interface) or another host name
