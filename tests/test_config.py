"""Config: defaults, precedence, secrets, dump, and clear errors for bad configs."""
from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from edge_fer import config as config_module
from edge_fer.config import SECTIONS, Config, dump_config, load_config
from edge_fer.errors import ConfigError

import tomllib

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret-Pa55"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_missing_default_file_means_all_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    cfg = load_config(None, {}, {})
    defaults = Config()
    assert cfg == replace(defaults, mqtt=replace(defaults.mqtt, client_id=f"edge-fer-{defaults.mqtt.device_id}"))


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.toml: not found"):
        load_config(str(tmp_path / "absent.toml"), {}, {})


def test_default_device_id_is_topic_safe(monkeypatch):
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: "Kiosk 3.Lobby/+#")
    assert config_module.default_device_id() == "kiosk-3-lobby"
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: "...")
    assert config_module.default_device_id() == "edge-fer"


def test_file_then_env_then_cli(tmp_path):
    path = write(tmp_path, "[mqtt]\nport = 1000\nhost = 'file'\n")
    env = {"EDGE_FER_MQTT__PORT": "2000", "EDGE_FER_SOURCE__LOOP": "off"}
    assert load_config(path, {}, {}).mqtt.port == 1000
    assert load_config(path, {}, env).mqtt.port == 2000
    cfg = load_config(path, {"mqtt.port": 3000, "mqtt.host": None, "source.uri": "file.mp4"}, env)
    assert (cfg.mqtt.port, cfg.mqtt.host, cfg.source.uri, cfg.source.loop) == (3000, "file", "file.mp4", False)


def test_env_and_cli_strings_are_parsed_to_the_key_type():
    cfg = load_config(None, {"mqtt.port": "8883", "detector.score_threshold": "0.7"},
                      {"EDGE_FER_HOMEASSISTANT__DISCOVERY": "yes", "EDGE_FER_TRACKER__SMOOTHING_S": "1",
                       "OTHER_APP__MQTT__HOST": "not ours"})
    assert cfg.mqtt.port == 8883 and cfg.detector.score_threshold == 0.7
    assert cfg.homeassistant.discovery is True and cfg.tracker.smoothing_s == 1.0


@pytest.mark.parametrize("name, hint", [
    ("EDGE_FER_MQTT_HOST", "did you mean EDGE_FER_MQTT__HOST?"),  # one underscore short: used to be ignored
    ("EDGE_FER_PRIVACY_K_MIN", "did you mean EDGE_FER_PRIVACY__K_MIN?"),
    ("EDGE_FER_CONFIG", "the config file is given with --config"),
])
def test_an_env_name_that_is_no_setting_is_refused_not_ignored(name, hint):
    with pytest.raises(ConfigError, match=re.escape(f"env {name}: not a setting") + ".*" + re.escape(hint)):
        load_config(os.devnull, {}, {name: "x"})


@pytest.mark.parametrize("changes, message", [
    ({"privacy.mode": "aggregate", "tracker.max_missed_s": "0"}, "aggregate mode needs at least 1 s"),
    ({"tracker.uncertain_below": "0.9", "tracker.uncertain_margin": "0.2"}, "must be at most 1"),
    ({"detector.min_face_px": "1000"}, "larger than the 640x480 frame"),
    ({"mqtt.host": "mqtt://broker.lan"}, "a host name or address only"),
    ({"mqtt.host": "broker.lan:8883"}, "put the port in mqtt.port"),
    ({"tracker.iou_match": "0"}, "tracker.iou_match = 0.0 .*allowed 0.05 to 0.9"),
    ({"tracker.iou_match": "1"}, "tracker.iou_match = 1.0 .*allowed 0.05 to 0.9"),
    ({"mqtt.buffer_size": "1000000"}, "mqtt.buffer_size = 1000000 .*out of range"),
])
def test_settings_that_would_break_a_promise_together_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_config(os.devnull, changes, {})


@pytest.mark.parametrize("host", ["broker.lan", "10.0.0.5", "fe80::1", "2001:db8::8883"])
def test_host_names_and_addresses_are_accepted(host):
    assert load_config(os.devnull, {"mqtt.host": host}, {}).mqtt.host == host


def test_int_given_for_float_is_accepted(tmp_path):
    assert load_config(write(tmp_path, "[source]\nfps = 15\n"), {}, {}).source.fps == 15.0


@pytest.mark.parametrize("where", ["config", "env", "password_file", "credential"])
def test_password_sources_and_redaction(tmp_path, where):
    env = {"EDGE_FER_MQTT__USERNAME": "fer"}
    text = "[mqtt]\n"
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    if where == "config":
        text += f"password = '{SECRET}'\n"
    elif where == "env":
        env["EDGE_FER_MQTT__PASSWORD"] = SECRET
    elif where == "password_file":
        text += f"password_file = '{secret_file}'\n"
    else:
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "mqtt_password").write_text(SECRET)
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds")
    cfg = load_config(write(tmp_path, text), {}, env)
    assert cfg.mqtt.password == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.mqtt)
    dumped = dump_config(cfg)
    assert SECRET not in dumped and 'password = "***"' in dumped


CAMERA_URL = f"rtsp://admin:{SECRET}@192.0.2.7:554/stream1"


@pytest.mark.parametrize("where", ["uri_file", "credential"])
def test_a_camera_url_with_a_password_can_live_outside_the_world_readable_config(tmp_path, where):
    text, env = "[source]\nwidth = 640\n", {}
    if where == "uri_file":
        (tmp_path / "camera").write_text(CAMERA_URL + "\n")
        text += f"uri_file = '{tmp_path / 'camera'}'\n"
    else:
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "source_uri").write_text(CAMERA_URL)
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds")
    cfg = load_config(write(tmp_path, text), {}, env)
    assert cfg.source.uri == CAMERA_URL
    dumped = dump_config(cfg)
    assert SECRET not in dumped and "# uri = " in dumped
    (tmp_path / "dumped.toml").write_text(dumped)
    assert load_config(str(tmp_path / "dumped.toml"), {}, env).source.uri == CAMERA_URL  # the dump loads again


def test_a_readable_uri_file_with_a_password_is_warned_about(tmp_path):
    from edge_fer.config import readable_camera_password

    (tmp_path / "camera").write_text(CAMERA_URL)
    path = write(tmp_path, f"[source]\nuri_file = '{tmp_path / 'camera'}'\n")
    (tmp_path / "camera").chmod(0o644)
    assert "camera holds a camera password" in readable_camera_password(path, load_config(path, {}, {}))
    (tmp_path / "camera").chmod(0o600)
    assert readable_camera_password(path, load_config(path, {}, {})) is None


def test_a_camera_url_given_twice_is_refused_and_an_empty_one_named(tmp_path):
    (tmp_path / "camera").write_text(CAMERA_URL)
    with pytest.raises(ConfigError, match=r"source\.uri and source\.uri_file: both set") as err:
        load_config(write(tmp_path, f"[source]\nuri = '/dev/video0'\nuri_file = '{tmp_path / 'camera'}'\n"), {}, {})
    assert SECRET not in str(err.value)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "source_uri").write_text(CAMERA_URL)
    creds = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    with pytest.raises(ConfigError, match=r"source\.uri is set and so is the systemd credential source_uri"):
        load_config(write(tmp_path, "[source]\nuri = '/dev/video0'\n"), {}, creds)
    with pytest.raises(ConfigError, match=r"source\.uri is set and so is"):  # from the command line too
        load_config(write(tmp_path, ""), {"source.uri": "/dev/video0"}, creds)
    (tmp_path / "creds" / "source_uri").write_text("\n")
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY/source_uri = .*: is empty"):
        load_config(write(tmp_path, ""), {}, creds)


def test_errors_never_show_the_password(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[mqtt]\npassword = '{SECRET}'\n"), {}, {"EDGE_FER_MQTT__PASSWORD": "x" * 3})
    assert "mqtt.username" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[mqtt]\npassword = 12345678\n"), {}, {})
    assert "mqtt.password = ***" in str(err.value) and "12345678" not in str(err.value)


def test_dump_round_trips_through_toml(tmp_path):
    cfg = load_config(None, {"mqtt.host": 'bro"ker', "privacy.mode": "presence"}, {})
    assert load_config(write(tmp_path, dump_config(cfg)), {}, {}) == cfg


def test_all_problems_are_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "[mqtt]\nport = 0\nkeepalive_s = 1\n[detector]\nkind = 'x'\n"), {},
                    {"EDGE_FER_PRIVACY__K_MIN": "0"})
    assert len(err.value.problems) == 4


EXISTING = "{existing}"
BAD_CONFIGS = [
    ("[mqtt]\nport = 0", r"mqtt\.port = 0 .*allowed 1 to 65535"),
    ("[mqtt]\nport = 70000", r"mqtt\.port = 70000 .*out of range"),
    ("[mqtt]\nport = '1883'", r"mqtt\.port = \"1883\" .*must be an integer"),
    ("[mqtt]\nkeepalive_s = 1.5", r"mqtt\.keepalive_s = 1\.5 .*must be an integer"),
    ("[mqtt]\nhots = 'x'", r"mqtt\.hots .*unknown key; did you mean mqtt\.host\?"),
    ("[mqttt]\nhost = 'x'", r"mqttt\.host .*unknown section 'mqttt'; did you mean mqtt\?"),
    ("mqtt = 'x'", r"mqtt .*must be a \[mqtt\] table"),
    ("[mqtt]\ndevice_id = 'pi kitchen'", r"mqtt\.device_id = \"pi kitchen\" .*no spaces"),
    ("[mqtt]\ndevice_id = 'a/b'", r"mqtt\.device_id = \"a/b\""),
    ("[mqtt]\ndevice_id = 'cam+'", r"mqtt\.device_id = \"cam\+\""),
    ("[mqtt]\ndevice_id = '#'", r"mqtt\.device_id = \"#\""),
    ("[mqtt]\ndevice_id = ''", r"mqtt\.device_id = \"\" .*must not be empty"),
    ("[mqtt]\ndevice_id = '" + "d" * 65 + "'", r"mqtt\.device_id = .*at most 64 characters"),
    ("[mqtt]\nprefix = 'home/+/fer'", r"mqtt\.prefix = \"home/\+/fer\""),
    ("[mqtt]\nprefix = 'home/'", r"mqtt\.prefix = \"home/\""),
    ("[mqtt]\nbuffer_size = 5", r"mqtt\.buffer_size = 5 .*allowed 32 to 100000"),
    ("[tracker]\nswitch_margin = 1.0", r"tracker\.switch_margin = 1(\.0)? .*allowed 0(\.0)? to 0\.8"),
    ("[mqtt]\ntls_ca_file = '/nonexistent/ca.pem'", r"mqtt\.tls_ca_file = \"/nonexistent/ca\.pem\" .*not found"),
    ("[mqtt]\npassword_file = '/nonexistent/pw'", r"mqtt\.password_file = .*not found"),
    ("[mqtt]\ntls_ca_file = '{existing}'\ntls_cert_file = '{existing}'", r"mqtt\.tls_cert_file and mqtt\.tls_key_file"),
    ("[mqtt]\ntls_insecure = true", r"mqtt\.tls_insecure = true: needs mqtt\.tls_ca_file"),
    ("[mqtt]\nusername = 'u'\npassword = 'p'\npassword_file = '{existing}'", r"mqtt\.password and mqtt\.password_file"),
    ("[mqtt]\npassword = 'p'", r"mqtt\.username: must be set"),
    ("[detector]\nkind = 'yolo'", r"detector\.kind = \"yolo\" .*one of blazeface-short, blazeface-full, haar"),
    ("[detector]\nscore_threshold = 1.5", r"detector\.score_threshold = 1\.5 .*allowed 0 to 1"),
    ("[detector]\nmax_faces = 0", r"detector\.max_faces = 0"),
    ("[classifier]\ninterpreter = 'tensorflow'", r"classifier\.interpreter = \"tensorflow\" .*auto"),
    ("[classifier]\nthreads = 9", r"classifier\.threads = 9 .*allowed 1 to 8"),
    ("[classifier]\nmodel = '/nonexistent/m.tflite'", r"classifier\.model = .*not found"),
    ("[tracker]\nsmoothing_s = -1", r"tracker\.smoothing_s = -1 .*allowed 0 to 10"),
    ("[source]\nstall_timeout_s = 0.1", r"source\.stall_timeout_s = 0\.1 .*allowed 0\.5 to 300"),
    ("[source]\nfps = 1" + "0" * 400, r"source\.fps = 10+ .*out of range; must be a finite number"),
    ("[source]\nloop = 'yes'", r"source\.loop = \"yes\" .*must be true or false"),
    ("[source]\nuri = ''", r"source\.uri = \"\" .*must not be empty"),
    ("[privacy]\nmode = 'anonymous'", r"privacy\.mode = \"anonymous\" .*labels, aggregate, presence"),
    ("[privacy]\nk_min = 0", r"privacy\.k_min = 0 .*allowed 1 to 1000"),
    ("[service]\nlog_level = 'LOUD'", r"service\.log_level = \"LOUD\" .*DEBUG, INFO"),
    ("[homeassistant]\nprefix = 'edge-fer'", r"mqtt\.prefix = \"edge-fer\": must differ from homeassistant\.prefix"),
    ("[mqtt\nhost = 1", r"config file .*config\.toml"),
]


@pytest.mark.parametrize("text, expected", BAD_CONFIGS, ids=[b[1].split(" ")[0].replace("\\", "") for b in BAD_CONFIGS])
def test_bad_config_names_the_key_value_and_what_is_allowed(tmp_path, text, expected):
    existing = tmp_path / "exists.pem"
    existing.write_text("x")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text.replace(EXISTING, str(existing))), {}, {})
    assert any(re.search(expected, p) for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("env, overrides, expected", [
    ({"EDGE_FER_MQTT__PORT": "abc"}, {}, r"mqtt\.port = \"abc\" \(from env EDGE_FER_MQTT__PORT\): must be an integer"),
    ({"EDGE_FER_MQTT__HOSTT": "x"}, {}, r"mqtt\.hostt \(from env EDGE_FER_MQTT__HOSTT\): .*did you mean mqtt\.host"),
    ({"EDGE_FER_SOURCE__LOOP": "maybe"}, {}, r"source\.loop = \"maybe\" .*true or false"),
    ({}, {"mqtt.device_id": "a b"}, r"mqtt\.device_id = \"a b\" \(from the command line\)"),
    ({}, {"mqtt.hots": "x"}, r"mqtt\.hots \(from the command line\): unknown key; did you mean mqtt\.host"),
])
def test_bad_env_and_cli_values_name_their_origin(env, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides, env)
    assert any(re.search(expected, p) for p in err.value.problems), err.value.problems


def test_example_config_lists_every_key_with_its_default():
    """config.example.toml shows each key, commented out as ``#key = default``, in its section."""
    listed: dict[str, str] = {}
    section = ""
    for line in (REPO / "config.example.toml").read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.fullmatch(r"#(\w+) = (.+)", line):
            listed[f"{section}.{m.group(1)}"] = m.group(2)
    defaults = Config()
    expected = {f"{s}.{f.name}": getattr(getattr(defaults, s), f.name) for s in SECTIONS for f in fields(SECTIONS[s])}
    assert listed.keys() == expected.keys()
    for key, text in listed.items():
        if key != "mqtt.device_id":  # shown as "<hostname>"
            assert tomllib.loads(f"v = {text}")["v"] == expected[key], key


@pytest.mark.parametrize("uri, shown", [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream", "rtsp://admin:***@10.0.0.5:554/stream"),
    ("http://cam:p%40ss@[fe80::1]/mjpg?x=1", "http://cam:***@[fe80::1]/mjpg?x=1"),
    ("rtsp://viewer@cam/stream", "rtsp://viewer@cam/stream"),  # no password: nothing to hide
    ("/dev/video0", "/dev/video0"),
    ("picamera:1", "picamera:1"),
    ("clips/a:b@c.mp4", "clips/a:b@c.mp4"),
    # urlsplit sees no password when it holds '#', '?' or '/': the user part runs to the last '@'
    ("rtsp://admin:pa#ss@cam/x", "rtsp://admin:***@cam/x"),
    ("rtsp://admin:p/a?ss@cam:554/x?ch=1", "rtsp://admin:***@cam:554/x?ch=1"),
    # cheap IP cameras take their credentials in the query
    ("http://cam/videostream.cgi?user=admin&pwd=s3cret", "http://cam/videostream.cgi?user=admin&pwd=***"),
    ("http://cam/v.cgi?loginuse=admin&loginpas=s3cret&res=32", "http://cam/v.cgi?loginuse=admin&loginpas=***&res=32"),
    ("https://cdn/live.m3u8?token=abc123#t=5", "https://cdn/live.m3u8?token=***#t=5"),
])
def test_a_camera_url_password_is_redacted(uri, shown):
    from edge_fer.redact import redact_uri

    assert redact_uri(uri) == shown


def test_a_mistyped_camera_url_is_reported_without_its_password(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[source]\nuri = ["rtsp://admin:CamPa55word@10.0.0.5/stream"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(config, {}, {})
    assert "CamPa55word" not in str(err.value) and "rtsp://admin:***@10.0.0.5/stream" in str(err.value)


def test_check_config_never_shows_a_camera_password():
    """Whoever reads the journal (ExecStartPre=check-config prints the config) could watch the faces."""
    uri = "rtsp://admin:CamPa55word@10.0.0.5/stream"
    dumped = dump_config(load_config(os.devnull, {"source.uri": uri}, {}))
    assert "CamPa55word" not in dumped and 'uri = "rtsp://admin:***@10.0.0.5/stream"' in dumped
