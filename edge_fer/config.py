"""One validated, frozen configuration tree, read once at start-up.

Sources, later ones winning: the TOML file, then ``EDGE_FER_<SECTION>__<KEY>`` environment
variables (``EDGE_FER_MQTT__HOST=broker.lan``; values are parsed to the key's type), then the
CLI's overrides (``{"mqtt.host": ...}``; ``None`` values are skipped). Every problem found is
collected and raised together as one ``ConfigError``, each naming the key, the value, where it
came from and what is allowed, so one edit fixes a config instead of one edit per restart.

The MQTT password comes from ``mqtt.password`` (file or ``EDGE_FER_MQTT__PASSWORD``), else
``mqtt.password_file``, else ``$CREDENTIALS_DIRECTORY/mqtt_password`` (systemd
``LoadCredential=``). It is kept out of ``repr`` and shown as ``***`` by ``dump_config``.
A camera URL holding a password is kept out of the config file, which every local user can read:
``source.uri_file`` or ``$CREDENTIALS_DIRECTORY/source_uri``; either one given with ``source.uri``
is refused (``uri_file`` wins over a credential).
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import socket
import stat
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

from edge_fer.errors import ConfigError
from edge_fer.redact import REDACTED, redact_uri

import tomllib

DEFAULT_CONFIG_PATH = "/etc/edge-fer/config.toml"
ENV_PREFIX = "EDGE_FER_"
ENV_SEPARATOR = "__"
CREDENTIAL_NAME = "mqtt_password"
"""File name under ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=mqtt_password:/path``)."""
SOURCE_CREDENTIAL_NAME = "source_uri"
"""File name under ``$CREDENTIALS_DIRECTORY`` for a camera URL with a password."""

MAX_TOPIC_ID_LEN = 64
"""device_id bound: it appears in every topic and in Home Assistant unique_ids."""
TOPIC_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
"""device_id alphabet: no MQTT wildcards (+ #), no level separator, and valid as a Home
Assistant discovery object_id, which allows only these characters."""
MAX_CLIENT_ID_LEN = 128
MQTT_V5, MQTT_V311 = "5", "3.1.1"
"""5 by default; 3.1.1 for brokers that speak nothing newer (Azure IoT Hub, RabbitMQ before 3.13)."""
FALLBACK_DEVICE_ID = "edge-fer"
MIN_IMAGE_PX, MAX_IMAGE_PX = 16, 4096
MAX_SOURCE_FPS = 120.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True,
              "false": False, "0": False, "no": False, "off": False}


def _opt(default: Any = MISSING, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[str, ...] | None = None, check: Callable[[Any], str | None] | None = None,
         secret: bool = False, default_factory: Callable[[], Any] | None = None) -> Any:
    """A config field: its default and what is allowed, read by the generic validator."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "check": check, "secret": secret}
    if default_factory is not None:
        return field(default_factory=default_factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


def _topic_id(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_TOPIC_ID_LEN:
        return f"must be at most {MAX_TOPIC_ID_LEN} characters"
    if not TOPIC_ID_RE.fullmatch(value):
        return "may contain only letters, digits, '_' and '-' (no spaces, '/', '+' or '#')"
    return None


def _topic_prefix(value: str) -> str | None:
    """Prefixes may span levels (``home/edge-fer``) but every level must be a plain id."""
    levels = value.split("/")
    if not value or any(not TOPIC_ID_RE.fullmatch(level) for level in levels):
        return "must be one or more '/'-separated levels of letters, digits, '_' or '-' (no '+', '#' or spaces)"
    return None


def _client_id(value: str) -> str | None:
    if len(value) > MAX_CLIENT_ID_LEN or any(c.isspace() for c in value):
        return f"must be at most {MAX_CLIENT_ID_LEN} characters without spaces (empty = derived)"
    return None


def _host(value: str) -> str | None:
    """A name or address: a URL or host:port would be retried for ever as ``host:port:1883``."""
    if "://" in value or "/" in value or any(c.isspace() for c in value) or value.count(":") == 1:
        return ("a host name or address only; put the port in mqtt.port and TLS in mqtt.tls_ca_file "
                "(no scheme, no :port, no path)")
    return None


def _file(value: str) -> str | None:
    if value and not Path(value).is_file():
        return "file not found (or not a regular file)"
    return None



def _log_level(value: str) -> str | None:
    return None if value.upper() in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"


def default_device_id() -> str:
    """The host name, lower-cased and reduced to the topic-safe alphabet."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-")
    return name[:MAX_TOPIC_ID_LEN] or FALLBACK_DEVICE_ID


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from."""

    uri: str = _opt("builtin:astronaut", check=lambda v: None if v else "must not be empty")
    # A file holding the uri, for a camera URL with a password: config.toml is world-readable.
    uri_file: str = _opt("", check=_file)
    width: int = _opt(640, lo=MIN_IMAGE_PX, hi=MAX_IMAGE_PX)
    height: int = _opt(480, lo=MIN_IMAGE_PX, hi=MAX_IMAGE_PX)
    fps: float = _opt(0.0, lo=0.0, hi=MAX_SOURCE_FPS)  # 0 = the source's own rate
    loop: bool = _opt(True)  # replay file sources forever
    stall_timeout_s: float = _opt(5.0, lo=0.5, hi=300.0)
    # Longest wait between two attempts to reopen a lost camera (the waits double from 0.5 s):
    # how long a camera that is back may stay unseen. Lower for a car, where a blind minute matters.
    reconnect_max_s: float = _opt(30.0, lo=0.5, hi=300.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Face detection: which detector and what counts as a face."""

    kind: str = _opt("blazeface-short", choices=("blazeface-short", "blazeface-full", "haar"))
    # MediaPipe's full-range default, kept for short range too (whose own is 0.5): the stricter
    # cut drops the low-scored, mostly small or turned faces, whose expression is least reliable.
    score_threshold: float = _opt(0.6, lo=0.0, hi=1.0)
    min_face_px: int = _opt(40, lo=8, hi=4096)
    max_faces: int = _opt(5, lo=1, hi=32)
    nms_iou: float = _opt(0.3, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class ClassifierConfig:
    """The expression model and the interpreter that runs it."""

    model: str = _opt("", check=_file)  # empty = the packaged model
    interpreter: str = _opt("auto", choices=("auto", "ai-edge-litert", "tflite-runtime"))
    threads: int = _opt(1, lo=1, hi=8)
    max_rate_hz: float = _opt(0.0, lo=0.0, hi=MAX_SOURCE_FPS)  # classify at most this often; 0 = every frame


@dataclass(frozen=True)
class TrackerConfig:
    """Track matching, smoothing and label hysteresis (see edge_fer.track)."""

    # Measured on a moving face: 0 lets a face anywhere inherit another's track (and id); 0.95
    # split one face into 4 tracks, 1.0 matched nothing. In aggregate mode either miscounts k_min.
    iou_match: float = _opt(0.3, lo=0.05, hi=0.9)
    max_missed_s: float = _opt(1.0, lo=0.0, hi=30.0)
    smoothing_s: float = _opt(0.5, lo=0.0, hi=10.0)  # EMA time constant
    # At most 0.8: a lead of 0.8 already needs the new label at 0.9 against the old at 0.1; at 1.0
    # no label could ever change, and check-config passed it.
    switch_margin: float = _opt(0.15, lo=0.0, hi=0.8)
    switch_hold_s: float = _opt(0.4, lo=0.0, hi=10.0)
    uncertain_below: float = _opt(0.45, lo=0.0, hi=1.0)
    uncertain_margin: float = _opt(0.05, lo=0.0, hi=0.5)

    def problems(self) -> list[str]:
        """Checks between fields of this section."""
        if self.uncertain_below + self.uncertain_margin > 1:
            return [f"tracker.uncertain_below + tracker.uncertain_margin = "
                    f"{self.uncertain_below + self.uncertain_margin:g}: must be at most 1, or every face stays uncertain"]
        return []


@dataclass(frozen=True)
class MqttConfig:
    """The broker, this device's topics, credentials, TLS and the outage buffer."""

    host: str = _opt("", check=_host)  # empty = no broker: JSON lines on stdout
    port: int = _opt(1883, lo=1, hi=65535)
    prefix: str = _opt("edge-fer", check=_topic_prefix)
    device_id: str = _opt(default_factory=default_device_id, check=_topic_id)
    client_id: str = _opt("", check=_client_id)  # empty = "edge-fer-<device_id>"
    keepalive_s: int = _opt(30, lo=5, hi=3600)
    protocol: str = _opt(MQTT_V5, choices=(MQTT_V5, MQTT_V311))
    username: str = _opt("")
    password: str = _opt("", secret=True)
    password_file: str = _opt("", check=_file)
    tls_ca_file: str = _opt("", check=_file)  # set = TLS on
    tls_cert_file: str = _opt("", check=_file)
    tls_key_file: str = _opt("", check=_file)
    tls_key_password: str = _opt("", secret=True)  # only for an encrypted tls_key_file
    tls_insecure: bool = _opt(False)  # skip the host name check (the chain is still verified)
    # A queued message holds 1.4-1.9 kB (tracemalloc): 100,000 is up to ~190 MB, as much as a 1 GB Pi
    # can spare; the old bound, 1,000,000, could take ~1.9 GB and get the daemon killed mid-outage.
    # At least 32: one announcement is up to 11 messages (online, 5 old-layout clearings, 3 configs,
    # 2 removals), and a queue no larger pushed its own "online" out.
    buffer_size: int = _opt(10_000, lo=32, hi=100_000)
    state_heartbeat_s: float = _opt(30.0, lo=1.0, hi=3600.0)
    stats_interval_s: float = _opt(10.0, lo=1.0, hi=3600.0)

    def problems(self) -> list[str]:
        """Checks between fields of this section."""
        out = []
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            out.append("mqtt.tls_cert_file and mqtt.tls_key_file: set both (a client certificate needs its key) "
                       "or neither")
        if self.tls_key_password and not self.tls_key_file:
            out.append("mqtt.tls_key_password: is the passphrase of mqtt.tls_key_file, which is not set")
        if not self.tls_ca_file:
            for key in ("tls_cert_file", "tls_key_file", "tls_insecure"):
                value = getattr(self, key)
                if value:
                    out.append(f"mqtt.{key} = {json.dumps(value)}: needs mqtt.tls_ca_file, which turns TLS on "
                               "(for the system CAs use /etc/ssl/certs/ca-certificates.crt)")
        if self.password and self.password_file:  # checked before the file fills the password
            out.append("mqtt.password and mqtt.password_file: set one, not both")
        return out


@dataclass(frozen=True)
class HomeAssistantConfig:
    """Home Assistant MQTT discovery."""

    discovery: bool = _opt(False)
    prefix: str = _opt("homeassistant", check=_topic_prefix)


@dataclass(frozen=True)
class PrivacyConfig:
    """What may leave the device (see PRIVACY.md)."""

    mode: str = _opt("labels", choices=("labels", "aggregate", "presence"))
    aggregate_window_s: float = _opt(60.0, lo=5.0, hi=3600.0)
    k_min: int = _opt(5, lo=1, hi=1000)  # fewest distinct tracks a published window may have


@dataclass(frozen=True)
class ServiceConfig:
    """The daemon itself."""

    log_level: str = _opt("INFO", check=_log_level)


@dataclass(frozen=True)
class Config:
    """The whole configuration; built only by ``load_config``, which validates it."""

    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class _Value:
    value: Any
    origin: str  # where it was set, for error messages
    from_text: bool = False  # an env/CLI string, to be parsed to the key's type


def _did_you_mean(word: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(options)}"


def _set(tree: dict[str, dict[str, _Value]], path: str, value: Any, origin: str, problems: list[str],
         from_text: bool = False) -> None:
    """Put one value at "section.key", or record why it has no such place."""
    section, _, key = path.partition(".")
    if section not in SECTIONS:
        problems.append(f"{path} ({origin}): unknown section {section!r}{_did_you_mean(section, list(SECTIONS))}")
        return
    keys = [f.name for f in fields(SECTIONS[section])]
    if key not in keys:
        problems.append(f"{path} ({origin}): unknown key{_did_you_mean(key, keys, f'{section}.')}")
        return
    tree.setdefault(section, {})[key] = _Value(value, origin, from_text)


def _read_file(path: str | None, problems: list[str]) -> dict[str, Any]:
    file = Path(DEFAULT_CONFIG_PATH if path is None else path)
    if not file.exists():
        if path is not None:
            problems.append(f"config file {file}: not found; give an existing file, or leave out --config for "
                            f"{DEFAULT_CONFIG_PATH} (or the built-in defaults); config.example.toml is a template")
        return {}
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"config file {file}: {exc}")
        return {}


def _from_file(data: Mapping[str, Any], origin: str, tree: dict, problems: list[str]) -> None:
    for section, table in data.items():
        if isinstance(table, dict):
            for key, value in table.items():
                _set(tree, f"{section}.{key}", value, origin, problems)
        elif section in SECTIONS:
            problems.append(f"{section} ({origin}): must be a [{section}] table, not a value")
        else:
            _set(tree, section, table, origin, problems)  # reports the unknown name


def _from_env(env: Mapping[str, str], tree: dict, problems: list[str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if ENV_SEPARATOR not in name:  # EDGE_FER_MQTT_HOST: one underscore short, and silently unused
            rest = name[len(ENV_PREFIX):].lower()
            section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
            hint = (f"; did you mean {ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{rest[len(section) + 1:].upper()}?"
                    if section else "; the config file is given with --config")
            problems.append(f"env {name}: not a setting: settings are {ENV_PREFIX}<SECTION>{ENV_SEPARATOR}<KEY>, "
                            f"two underscores between section and key{hint}")
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition(ENV_SEPARATOR)
        _set(tree, f"{section}.{key}", value, f"from env {name}", problems, from_text=True)


def _parse(value: Any, kind: type) -> Any:
    """Turn an env/CLI string into the key's type; anything unparsable is left to be reported."""
    if not isinstance(value, str) or kind is str:
        return value
    text = value.strip()
    if kind is bool:
        return BOOL_WORDS.get(text.lower(), value)
    try:
        return kind(text)
    except ValueError:
        return value


def _redact_strings(value: Any) -> Any:
    """``value`` with every camera-URL password hidden, however deep a mistyped value nests it."""
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, (list, tuple)):
        return [_redact_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    return value


def _check_value(path: str, value: Any, f: Any, kind: type, origin: str) -> tuple[Any, str | None]:
    """Return the value in the key's type, or a message naming what is allowed."""
    meta = f.metadata
    shown = REDACTED if meta["secret"] else json.dumps(_redact_strings(value), default=str)
    where = f"{path} = {shown} ({origin})"
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            return None, f"{where}: out of range; must be a finite number"
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return None, f"{where}: must be {_TYPE_WORDS[kind]}"
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"{where}: must be a finite number"
    lo, hi, choices, check = meta["lo"], meta["hi"], meta["choices"], meta["check"]
    if lo is not None and not lo <= value <= hi:
        return None, f"{where}: out of range; allowed {lo:g} to {hi:g}"
    if choices and value not in choices:
        return None, f"{where}: must be one of {', '.join(choices)}"
    reason = check(value) if check else None
    return (None, f"{where}: {reason}") if reason else (value, None)


def _build(tree: dict[str, dict[str, _Value]], problems: list[str]) -> Config:
    sections = {}
    for name, cls in SECTIONS.items():
        given = tree.get(name, {})
        values = {}
        for f in fields(cls):
            if f.name not in given:
                continue
            kind = _TYPES[f.type]  # type: ignore[index]
            raw = given[f.name]
            given_value = _parse(raw.value, kind) if raw.from_text else raw.value
            value, problem = _check_value(f"{name}.{f.name}", given_value, f, kind, raw.origin)
            if problem:
                problems.append(problem)
            else:
                values[f.name] = value
        sections[name] = cls(**values)
    return Config(**sections)


def _read_secret(path: Path, label: str, problems: list[str]) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{label} = {json.dumps(str(path))}: cannot be read ({type(exc).__name__})")
        return ""


def _password(m: MqttConfig, env: Mapping[str, str], problems: list[str]) -> str:
    """mqtt.password (file or env), else mqtt.password_file, else the systemd credential."""
    if m.password:
        return m.password
    if m.password_file:
        return _read_secret(Path(m.password_file), "mqtt.password_file", problems)
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return _read_secret(Path(credentials) / CREDENTIAL_NAME, "$CREDENTIALS_DIRECTORY/mqtt_password", problems)
    return ""


def _resolve_source(s: SourceConfig, uri_given: bool, env: Mapping[str, str], problems: list[str]) -> SourceConfig:
    """source.uri, else source.uri_file, else the systemd credential; two of them is a mistake."""
    credentials = env.get("CREDENTIALS_DIRECTORY")
    credential = Path(credentials) / SOURCE_CREDENTIAL_NAME if credentials else None
    if s.uri_file:
        if uri_given:
            problems.append("source.uri and source.uri_file: both set; keep one (uri_file for a URL with a password)")
            return s
        path, label = Path(s.uri_file), "source.uri_file"
    elif credential is not None and credential.is_file():
        if uri_given:
            problems.append(f"source.uri is set and so is the systemd credential {SOURCE_CREDENTIAL_NAME} "
                            f"(/etc/credstore/edge-fer.{SOURCE_CREDENTIAL_NAME}); keep one")
            return s
        path, label = credential, f"$CREDENTIALS_DIRECTORY/{SOURCE_CREDENTIAL_NAME}"
    else:
        return s
    uri = _read_secret(path, label, problems).strip()
    if not uri:
        if not any(p.startswith(label) for p in problems):
            problems.append(f"{label} = {json.dumps(str(path))}: is empty; it must hold the source URI")
        return s
    return replace(s, uri=uri)


def _resolve_mqtt(m: MqttConfig, env: Mapping[str, str], problems: list[str]) -> MqttConfig:
    """Fill in the password from where it is kept, and the derived client_id."""
    password = _password(m, env, problems)
    if password and not m.username:
        problems.append("mqtt.username: must be set when a password is given (config, env, "
                        "password_file or $CREDENTIALS_DIRECTORY/mqtt_password)")
    return replace(m, password=password, client_id=m.client_id or f"edge-fer-{m.device_id}")


AGGREGATE_MIN_MISSED_S = 1.0
"""In aggregate mode, the least tracker.max_missed_s: with 0, one person the detector misses 1 frame
in 5 became 106 tracks a minute and met k_min alone (measured); 1 s is the default."""


def _check_across_sections(cfg: Config) -> list[str]:
    """Settings each valid alone that together break a promise."""
    out = []
    t, d, s = cfg.tracker, cfg.detector, cfg.source
    if cfg.privacy.mode == "aggregate" and t.max_missed_s < AGGREGATE_MIN_MISSED_S:
        out.append(f"tracker.max_missed_s = {t.max_missed_s:g}: aggregate mode needs at least "
                   f"{AGGREGATE_MIN_MISSED_S:g} s, or a face the detector misses for a frame counts as a new "
                   "person toward privacy.k_min")
    if d.min_face_px > min(s.width, s.height):
        out.append(f"detector.min_face_px = {d.min_face_px}: larger than the {s.width}x{s.height} frame, so no face "
                   "could ever count; lower it")
    return out


def _check_topic_prefixes_distinct(cfg: Config) -> list[str]:
    if cfg.mqtt.prefix == cfg.homeassistant.prefix:
        return [f"mqtt.prefix = {json.dumps(cfg.mqtt.prefix)}: must differ from homeassistant.prefix "
                "(the discovery topics would mix with edge-fer's own)"]
    return []


def load_config(path: str | None = None, overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read file, env and CLI overrides into one validated ``Config``, or raise ``ConfigError``.

    ``path=None`` reads ``/etc/edge-fer/config.toml`` if it exists (defaults otherwise); an
    explicit path must exist. ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    tree: dict[str, dict[str, _Value]] = {}
    _from_file(_read_file(path, problems), f"from {path or DEFAULT_CONFIG_PATH}", tree, problems)
    _from_env(env, tree, problems)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(tree, key, value, "from the command line", problems, from_text=True)
    cfg = _build(tree, problems)
    problems += cfg.mqtt.problems() + _check_topic_prefixes_distinct(cfg) + cfg.tracker.problems() + _check_across_sections(cfg)
    cfg = replace(cfg, mqtt=_resolve_mqtt(cfg.mqtt, env, problems),
                  source=_resolve_source(cfg.source, "uri" in tree.get("source", {}), env, problems),
                  service=replace(cfg.service, log_level=cfg.service.log_level.upper()))
    if problems:
        raise ConfigError(problems)
    return cfg


CAMERA_SECRET_HOMES = (f"under systemd, /etc/credstore/edge-fer.{SOURCE_CREDENTIAL_NAME} (mode 0600; the "
                       "service's dynamic user cannot read a root-only file); elsewhere, a file named by "
                       "source.uri_file that only the user running edge-fer can read")


def readable_camera_password(path: str | None, cfg: Config) -> str | None:
    """A warning when a file every local user can read holds a camera password: the config file
    (the installer's mode, 0644, so the dynamic user can read it) or source.uri_file. Whoever reads
    it can watch the faces. Not an error: an existing install keeps running while it is moved."""
    if redact_uri(cfg.source.uri) == cfg.source.uri:
        return None
    file = Path(cfg.source.uri_file or (DEFAULT_CONFIG_PATH if path is None else path))
    try:
        readable = bool(file.stat().st_mode & stat.S_IROTH)
        in_config = cfg.source.uri_file or _read_file(str(file), []).get("source", {}).get("uri") == cfg.source.uri
    except OSError:
        return None
    if not (readable and in_config):
        return None
    return (f"{file} holds a camera password (source.uri) and every user of this machine can read it: move the "
            f"URL: {CAMERA_SECRET_HOMES}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    return repr(value)


def dump_config(cfg: Config) -> str:
    """The effective config as TOML (loadable again), secrets shown as ``***``."""
    lines = []
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in fields(section):
            value = getattr(section, f.name)
            if f.metadata["secret"] and value:
                value = REDACTED
            elif isinstance(value, str) and redact_uri(value) != value:  # a camera URL's password
                # shown, but not as a setting: loaded again, it would be the wrong password, and
                # beside uri_file or the credential it would be a second URL
                lines.append(f"# {f.name} = {_toml_value(redact_uri(value))}  (holds a password; not repeated)")
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
