"""The config file: YAML with `${VAR}` expansion, validated by pydantic at load time.

Every error names the file, the line and the key path (`tenants.acme.poll.interval_s`), so an
operator can fix it without reading our source. Secrets are `SecretStr`: their repr is masked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streamer import yamlload
from streamer.client_address import Network, parse_networks
from streamer.yamlload import Path as KeyPath

DEFAULT_CONFIG_NAME = "streamer.yaml"
CONFIG_ENV = "STREAMER_CONFIG"


class ConfigError(Exception):
    """A config that cannot be used; `problems` are one line each, ready to print."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- small value parsers ------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """`90`, `"30s"`, `"5m"`, `"1h"`, `"2d"` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 2d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 1h or 2d")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day|s|m|h|d)\s*$")
_RATE_UNIT_S = {"second": 1, "s": 1, "minute": 60, "m": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400}


def parse_rate(value: str) -> tuple[int, float]:
    """`"10/hour"` → (10, 3600.0): that many events per window of seconds."""
    match = _RATE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a rate such as 10/hour or 3/minute")
    return int(match.group(1)), float(_RATE_UNIT_S[match.group(2)])


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _rate(value: Any) -> str:
    parse_rate(value)
    return str(value)


Rate = Annotated[str, BeforeValidator(_rate)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- sections ------------------------------------------------------------------------------


class _Listener(_Strict):
    """A section with `listen: host:port`, checked at load time."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, such as 127.0.0.1:8080")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ServerConfig(_Listener):
    listen: str = "127.0.0.1:8080"
    public_url: str | None = None
    max_body_bytes: int = Field(5 * 1024 * 1024, gt=0)
    #: A request's line and headers must arrive within this (it is also the keep-alive idle time).
    header_timeout_s: float = Field(10, gt=0)
    #: A request's whole body must arrive within this after its headers, else 408.
    body_timeout_s: float = Field(30, gt=0)
    #: Open HTTP connections at most; more get 503. Default (and ceiling): what the file descriptor
    #: limit leaves for the store, SMTP and Auth0 connections.
    max_connections: int | None = Field(None, ge=1)
    #: CIDRs of the proxies in front of the daemon: only their X-Forwarded-For / Forwarded are believed.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # raises ValueError naming the entry
        return value

    @property
    def trusted_networks(self) -> list[Network]:
        return parse_networks(self.trusted_proxies)


class SmtpConfig(_Strict):
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(alias="from")
    pool_size: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(30, gt=0)
    #: Reply-To of every email (a tenant's reply_to wins); unset: replies go to `from`.
    reply_to: str | None = None

    @field_validator("username", "password", "reply_to", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("from_", "reply_to")
    @classmethod
    def _mailbox(cls, value: str | None) -> str | None:
        return _one_mailbox(value)


def _one_mailbox(value: str | None) -> str | None:
    """A header address is checked at load time, not at the first send."""
    from streamer.message import InvalidAddress, parse_mailbox

    if value is not None:
        try:
            parse_mailbox(value, "this")
        except InvalidAddress as exc:
            raise ValueError(str(exc)) from None
    return value


class DkimKeyConfig(_Strict):
    """One DKIM signing key: mail whose From domain is `domain` (or a subdomain of it) is signed
    with it, for every tenant or only the listed ones. The key is a PEM file or PEM text (from
    the environment); `streamer check` loads it and signs a test message with it."""

    domain: str = Field(max_length=253, pattern=r"^([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
    selector: str = Field(
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )  # noqa: E501
    private_key_file: Path | None = None
    private_key: SecretStr | None = None
    tenants: list[str] = []

    @field_validator("private_key", mode="before")
    @classmethod
    def _blank_key(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _one_source(self) -> DkimKeyConfig:
        if (self.private_key_file is None) == (self.private_key is None):
            raise ValueError(
                "give exactly one of private_key_file (a PEM file) or private_key (PEM text, "
                'e.g. "${DKIM_PRIVATE_KEY}")'
            )
        return self


class Backoff(_Strict):
    initial_s: float = Field(5, gt=0)
    max_s: float = Field(3600, gt=0)


class DeliveryConfig(_Strict):
    max_attempts: int = Field(8, ge=1)
    backoff: Backoff = Backoff()
    retention_days: float = Field(30, gt=0)
    workers: int = Field(8, ge=1, le=256)
    #: Last resort: an email claimed by a replica that cannot be proven dead comes back after this
    #: long (PostgreSQL takes a dead replica's claims back within seconds; see README).
    lease_s: float = Field(300, ge=60)


class TemplatesConfig(_Strict):
    dir: Path = Path("templates")
    default_locale: str = "en"


class RedirectsConfig(_Strict):
    allowed_hosts: list[str] = []


class PollConfig(_Strict):
    enabled: bool = False
    interval_s: float = Field(10, gt=0)
    start: Literal["now", "oldest"] = "now"


_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TenantConfig(_Strict):
    domain: str
    api_url: str | None = None
    client_id: str
    client_secret: SecretStr
    webhook_token: SecretStr | None = None
    default_locale: str | None = None
    poll: PollConfig = PollConfig()
    vars: dict[str, Any] = {}
    #: Reply-To of this tenant's emails (wins over smtp.reply_to).
    reply_to: str | None = None

    @field_validator("webhook_token", "reply_to", mode="before")
    @classmethod
    def _blank_token(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return _one_mailbox(value)

    @property
    def base_url(self) -> str:
        """Base of /oauth/token and /api/v2 (a local stand-in in tests and `streamer dev`)."""
        return (self.api_url or f"https://{self.domain}").rstrip("/")

    @property
    def audience(self) -> str:
        return f"https://{self.domain}/api/v2/"


class TicketConfig(_Strict):
    kind: Literal["email_verification", "password_change"]
    result_url: str | None = None
    ttl_sec: int | None = Field(None, ge=0)


class Cooldown(_Strict):
    cooldown: Duration


class MarkConfig(_Strict):
    app_metadata: dict[str, Any]


class OnceKey(_Strict):
    """Once per user and rendered key, e.g. `{key: "{{ event.ip }} {{ event.user_agent }}"}`
    sends a new-device notice once per (user, IP, browser)."""

    key: str = Field(min_length=1)


OncePolicy = Literal["per_user", "per_event"] | Cooldown | OnceKey


class RuleConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    on: list[str] = Field(min_length=1)
    if_: str | None = Field(None, alias="if")
    once: OncePolicy = "per_event"
    ticket: TicketConfig | None = None
    template: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    mark: MarkConfig | None = None
    #: One-click unsubscribe (RFC 8058) for optional notices; never on transactional mail (check refuses it).
    unsubscribe: bool = False

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RateLimits(_Strict):
    per_ip: Rate = "10/hour"
    per_address: Rate = "3/hour"


class PasswordResetConfig(_Strict):
    enabled: bool = False
    new_password: bool = False
    min_length: int = Field(8, ge=1)
    rate_limit: RateLimits = RateLimits()


# --- bounces, complaints and unsubscribes (issue 13) ---------------------------------------------

_PLAIN_ADDRESS = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


def _secret_long_enough(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("use a random secret of at least 16 characters (e.g. `openssl rand -hex 32`)")
    return value


class SoftBounceConfig(_Strict):
    count: int = Field(3, ge=1)
    window: Duration = 7 * 86400.0


class InboundConfig(_Listener):
    """The optional listener for DSNs and ARF reports (point the return path's MX, or a relay, at it)."""

    listen: str = "127.0.0.1:2525"
    protocol: Literal["smtp", "lmtp"] = "smtp"
    max_message_bytes: int = Field(10 * 1024 * 1024, gt=0)
    #: PEM certificate (with its chain) and private key, relative to the config file: the listener
    #: then offers STARTTLS, as MTAs that deliver to a public MX expect.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Refuse MAIL until the client has done STARTTLS (needs the certificate). Off by default: many
    #: MTAs still fall back to plain text, and a refused bounce is a lost bounce.
    require_starttls: bool = False

    @model_validator(mode="after")
    def _tls_pair(self) -> InboundConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file (or neither)")
        if self.require_starttls and self.tls_cert_file is None:
            raise ValueError("require_starttls needs tls_cert_file and tls_key_file (STARTTLS needs a certificate)")
        return self


class SesWebhookConfig(_Strict):
    #: Only notifications of these SNS topics are believed (and subscription confirmations followed).
    topic_arns: list[str] = Field(min_length=1)


class PostmarkWebhookConfig(_Strict):
    #: Postmark sends these as HTTP Basic credentials (https://user:password@host/… in the webhook URL).
    username: str = Field(min_length=1)
    password: SecretStr

    _password = field_validator("password")(_secret_long_enough)


class SuppressionWebhooks(_Strict):
    ses: SesWebhookConfig | None = None
    postmark: PostmarkWebhookConfig | None = None


class SuppressionConfig(_Strict):
    #: "bounces@bounces.acme.test" makes each email's MAIL FROM bounces+<token>@bounces.acme.test (VERP).
    return_path: str | None = None
    #: Signs the return-path tokens; required with return_path.
    secret: SecretStr | None = None
    soft_bounces: SoftBounceConfig = SoftBounceConfig()
    inbound: InboundConfig | None = None
    webhooks: SuppressionWebhooks = SuppressionWebhooks()

    _secret = field_validator("secret")(_secret_long_enough)

    @field_validator("return_path")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and (not _PLAIN_ADDRESS.match(value) or "+" in value):
            raise ValueError("expected a plain address without '+', such as bounces@bounces.acme.test")
        return value

    @model_validator(mode="after")
    def _needs_secret(self) -> SuppressionConfig:
        if (self.return_path or self.inbound) and self.secret is None:
            raise ValueError("return_path and inbound need `secret` (it signs the return-path tokens)")
        if self.inbound and not self.return_path:
            raise ValueError("inbound needs return_path: reports are matched to recipients by its tokens")
        return self


class UnsubscribeConfig(_Strict):
    #: Signs the per-user, per-rule unsubscribe links; required once a rule says `unsubscribe: true`.
    secret: SecretStr | None = None
    #: Optional mailto: target of List-Unsubscribe (needs suppression.inbound to be acted on).
    mailto: str | None = None

    _secret = field_validator("secret")(_secret_long_enough)

    @field_validator("mailto")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and not _PLAIN_ADDRESS.match(value):
            raise ValueError("expected a plain address, such as unsubscribe@acme.test")
        return value


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    store: str = "sqlite:///streamer.db"
    smtp: SmtpConfig
    delivery: DeliveryConfig = DeliveryConfig()
    templates: TemplatesConfig = TemplatesConfig()
    redirects: RedirectsConfig = RedirectsConfig()
    tenants: dict[str, TenantConfig] = Field(min_length=1)
    rules: list[RuleConfig] = Field(min_length=1)
    password_reset: PasswordResetConfig = PasswordResetConfig()
    #: DKIM keys (optional; without them the relay should sign, see README).
    dkim: list[DkimKeyConfig] = []
    suppression: SuppressionConfig = SuppressionConfig()
    unsubscribe: UnsubscribeConfig = UnsubscribeConfig()
    #: Directory of the config file; relative paths in the config are relative to it.
    base_dir: Path = Field(default=Path("."), exclude=True)
    #: The file this config came from, for messages.
    source: str = Field(default="<config>", exclude=True)
    #: Line of each key path in that file (yamlload.load_with_lines), for `file:line` messages.
    key_lines: Any = Field(default=None, exclude=True, repr=False)

    def where(self, *path: str | int) -> str:
        """`streamer.yaml:42` for a key path such as ("rules", 0, "if"); the file alone if unknown."""
        line = yamlload.line_for(self.key_lines or {}, path)
        return f"{self.source}:{line}" if line else self.source

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for name in value:
            if not _TENANT_NAME.match(name):
                raise ValueError(f"tenant name {name!r} may use letters, digits, '_', '.', '-' only")
        return value

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Config:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; rule names must be unique")
            seen.add(rule.name)
        return self

    @model_validator(mode="after")
    def _dkim_tenants_exist(self) -> Config:
        for index, key in enumerate(self.dkim):
            unknown = [name for name in key.tenants if name not in self.tenants]
            if unknown:
                raise ValueError(f"dkim.{index}.tenants: no tenant named {', '.join(map(repr, unknown))}")
        return self

    def reply_to(self, tenant: str) -> str | None:
        """The Reply-To for one tenant's emails: the tenant's, else smtp.reply_to, else none."""
        own = self.tenants[tenant].reply_to if tenant in self.tenants else None
        return own or self.smtp.reply_to

    @property
    def templates_dir(self) -> Path:
        return (self.base_dir / self.templates.dir).resolve()

    @property
    def store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute against the config dir."""
        prefix = "sqlite:///"
        if self.store.startswith(prefix) and not self.store.startswith(prefix + "/"):
            return prefix + str((self.base_dir / self.store[len(prefix) :]).resolve())
        return self.store

    def listened_types(self) -> set[str]:
        return {code for rule in self.rules for code in rule.on}

    def tenant_default_locales(self) -> dict[str, str | None]:
        return {name: tenant.default_locale for name, tenant in self.tenants.items()}


# --- loading -------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def expand_env(value: str, env: dict[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset VAR without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise ValueError(f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")

    return _VAR.sub(substitute, value)


def _expand_tree(data: Any, env: dict[str, str], path: KeyPath, problems: list[tuple[KeyPath, str]]) -> Any:
    if isinstance(data, dict):
        return {k: _expand_tree(v, env, path + (k,), problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, env, path + (i,), problems) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        try:
            return expand_env(data, env)
        except ValueError as exc:
            problems.append((path, str(exc)))
    return data


def format_path(path: KeyPath) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _pydantic_problems(exc: ValidationError, source: str, lines: dict[KeyPath, int]) -> list[str]:
    problems = []
    for error in exc.errors():
        # Drop pydantic's union-branch labels such as 'literal[...]' or 'Cooldown'.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p[:1].isupper())))
        loc = tuple("if" if p == "if_" else "from" if p == "from_" else p for p in loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        line = yamlload.line_for(lines, loc)
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {format_path(loc)}: {message}")
    return sorted(set(problems), key=problems.index)


def parse_config(
    text: str, *, source: str = "<config>", base_dir: Path | None = None, env: dict[str, str] | None = None
) -> Config:
    """Parse and validate config text; raise ConfigError listing every problem found."""
    env = dict(os.environ) if env is None else env
    try:
        data, lines = yamlload.load_with_lines(text)
    except Exception as exc:  # yaml.YAMLError and friends
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the config must be a YAML mapping of sections (server, smtp, tenants, rules …)"])
    env_problems: list[tuple[KeyPath, str]] = []
    data = _expand_tree(data, env, (), env_problems)
    problems = [
        f"{source}:{yamlload.line_for(lines, path) or '?'}: {format_path(path)}: {message}"
        for path, message in env_problems
    ]
    data["base_dir"] = base_dir or Path(".")
    data["source"] = source
    data["key_lines"] = lines
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, source, lines)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def resolve_config_path(explicit: str | None) -> Path:
    """`-c` wins, then `$STREAMER_CONFIG`, then `./streamer.yaml`."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found (pass -c FILE or set ${CONFIG_ENV})"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent, env=env)
