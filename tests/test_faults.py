"""Fault injection on the real daemon: each test runs `edge-fer run` as a subprocess with its own
config, a real NOTIFY_SOCKET (tests/daemon_proc.py), real video files or a local MJPEG camera, and
for MQTT the real mosquitto fixture. Timings derive from the daemon's own constants.

Design facts these tests pin (edge_fer/service.py, health.py, capture/latest.py):
- READY=1 follows the first processed frame; WATCHDOG=1 follows processed frames at half of
  WATCHDOG_USEC; STATUS= (fps, faces) every STATUS_INTERVAL_S.
- A stalled or lost camera stops the pings (systemd's WatchdogSec= would restart us) while the
  source reconnects with backoff on its own; when frames return, so do the pings. The process
  does not exit by itself.
- SIGTERM/SIGINT exit 0 within 2 s, `available` = stopped with the signal as reason; with a hung
  camera `stopped` still goes out at once, the exit waits for the capture threads (< 5 s).
- A bad model or config exits 2 (no restart); a camera dead at start or a failure mid-run exits 1
  (restart); SIGHUP applies a valid config whole, or nothing of an invalid one.
- The process writes no file at all, and kill -9 leaves nothing that hinders the next start.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import cv2
import pytest
from daemon_proc import START_TIMEOUT_S, WAIT_S, Daemon, MjpegServer, NotifyListener, base_config, toml_text
from fixtures_media import read_astronaut, write_video
from mqtt_broker import HeldRelay

from edge_fer.capture.latest import READ_TIMEOUT_S, RECONNECT_INITIAL_S
from edge_fer.health import STATUS_INTERVAL_S, WATCHDOG_PING_FRACTION
from edge_fer.publish import NO_PICTURE_REASON
from edge_fer.service import FIRST_FRAME_TIMEOUT_S
from edge_fer.model_card import PACKAGED_MODEL, card_path_for

WATCHDOG_USEC = 2_000_000  # 2 s: pings every second
PING_S = WATCHDOG_USEC / 1e6 * WATCHDOG_PING_FRACTION
CAMERA_FPS = 15.0
VIDEO_FRAMES = 25  # 1.7 s per loop at 15 fps
STALL_S = 1.0  # source.stall_timeout_s for the stalled-camera tests (also the stream's read timeout)
HUNG_READ_S = 5.0  # the default stall_timeout_s: a read stuck this long before it gives up
STOP_BUDGET_S = 2.0  # SIGTERM to exit
EXIT_S = 20.0  # any expected exit, generous for a loaded machine
LOG_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.M)  # the terminal log format
BLAZEFACE = PACKAGED_MODEL.parent / "face_detection_short_range.tflite"


@dataclass(frozen=True)
class Dirs:
    """Where the daemon runs: every one of them must stay empty."""

    work: Path  # cwd
    home: Path
    tmp: Path  # TMPDIR

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "TMPDIR": str(self.tmp)}

    def contents(self) -> dict[str, list[str]]:
        return {name: sorted(str(p.relative_to(d)) for p in d.rglob("*"))
                for name, d in vars(self).items() if any(d.iterdir())}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A looping camera stand-in: the astronaut photo, numbered frames, MJPG at camera rate."""
    return write_video(tmp_path_factory.mktemp("video") / "camera.avi", VIDEO_FRAMES, CAMERA_FPS)


@pytest.fixture
def dirs(tmp_path) -> Dirs:
    made = Dirs(*(tmp_path / name for name in ("work", "home", "tmp")))
    for d in vars(made).values():
        d.mkdir()
    return made


@pytest.fixture
def notify(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def spawn(tmp_path, dirs) -> Callable[..., Daemon]:
    """spawn(config_tree, **Daemon kwargs) -> a running daemon; every one is reaped at the end."""
    started: list[Daemon] = []

    def make(config: dict, **kwargs) -> Daemon:
        path = tmp_path / "config.toml"
        path.write_text(toml_text(config))
        daemon = Daemon(path, cwd=dirs.work, env=dirs.env(), **kwargs)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def camera():
    """A local MJPEG camera serving the astronaut at camera rate."""
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(read_astronaut(), (320, 240)))
    assert ok
    server = MjpegServer(jpeg.tobytes(), CAMERA_FPS)
    yield server
    server.close()


def mqtt_section(broker) -> dict:
    return {"host": broker.host, "port": broker.port, "prefix": f"ft{uuid.uuid4().hex[:10]}", "keepalive_s": 5}


def wait_exit(daemon: Daemon, sent: float, timeout: float = EXIT_S) -> tuple[int, float]:
    """(exit code, seconds from ``sent`` to exit), polled finely so the time is the exit time."""
    deadline = sent + timeout
    while daemon.proc.poll() is None:
        assert time.monotonic() < deadline, f"still running {timeout} s after the signal; log:\n{daemon.log()}"
        time.sleep(0.005)
    elapsed = time.monotonic() - sent
    return daemon.wait(), elapsed


def ping_gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


# --- sd_notify protocol ---------------------------------------------------------------------------

def test_ready_follows_the_first_frame_then_watchdog_pings_and_status(spawn, dirs, notify, video):
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}),
                   notify=notify, watchdog_usec=WATCHDOG_USEC)
    ready = notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    periodic = notify.wait_note(lambda n: "STATUS" in n.fields and "READY" not in n.fields, after=ready.at,
                                timeout=STATUS_INTERVAL_S + WAIT_S)
    sent = daemon.signal(signal.SIGTERM)
    rc, _ = wait_exit(daemon, sent)
    assert rc == 0, daemon.log()

    first = notify.messages[0]
    assert first is ready and first.fields["STATUS"] == "fps=0.0 faces=0", notify.messages
    assert len(notify.with_var("READY")) == 1
    # "online" is stamped (wall clock, ms) with the first frame, before READY=1.
    online = daemon.messages("available")[0]["payload"]
    ready_ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ready.wall)) + f".{int(ready.wall * 1000) % 1000:03d}Z"
    assert online["status"] == "online" and online["ts"] <= ready_ts, (online, ready_ts)

    pings = notify.times("WATCHDOG", "1")
    assert pings and pings[0] >= ready.at, "a watchdog ping before READY=1"
    during = [t for t in pings if t < sent]
    gaps = ping_gaps(during)
    assert len(gaps) >= 4, during
    assert PING_S * 0.9 <= statistics.median(gaps) <= PING_S * 1.5, gaps
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"a gap would have tripped WatchdogSec: {gaps}"

    assert re.fullmatch(r"fps=\d+\.\d faces=\d+", periodic.fields["STATUS"]), periodic.fields
    fps = float(periodic.fields["STATUS"].split()[0].removeprefix("fps="))
    assert 0 < fps <= CAMERA_FPS * 1.2
    assert periodic.at - ready.at == pytest.approx(STATUS_INTERVAL_S, abs=1.5)
    assert notify.messages[-1].fields == {"STOPPING": "1"}


# --- the camera -----------------------------------------------------------------------------------

def test_stalled_camera_stops_watchdog_pings_until_frames_return(spawn, dirs, notify, camera):
    daemon = spawn(base_config(camera.url, source={"stall_timeout_s": STALL_S}),
                   notify=notify, watchdog_usec=WATCHDOG_USEC)
    ready = notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    notify.wait_var("WATCHDOG", "1", after=ready.at, count=3)
    daemon.wait_messages(lambda m: any(e["payload"]["event"] == "appeared" for e in m), "expression")
    paused = time.monotonic()
    camera.pause()
    daemon.wait_log(r"capture http://\S+: (stalled|read failed)", after=paused)
    time.sleep(max(0.0, paused + 2 * WATCHDOG_USEC / 1e6 - time.monotonic()))  # silent past WatchdogSec
    resumed = time.monotonic()
    # With no picture the device says it is blind, and the face's track ends; no state claims
    # that nobody is there (a covered in-car camera is not an absent driver).
    away = daemon.messages(since=paused)
    assert [m["payload"]["status"] for m in away if m["topic"].endswith("/available")] == ["no_picture"], away
    assert [m["payload"]["event"] for m in away if m["topic"].endswith("/expression")] == ["gone"], away
    assert [m for m in away if m["topic"].endswith("/state")] == [], away
    assert [n.fields["STATUS"] for n in notify.with_var("STATUS", after=paused)][-1:] == [NO_PICTURE_REASON]
    camera.resume()
    back = notify.wait_var("WATCHDOG", "1", after=resumed, timeout=WAIT_S)
    reopened = daemon.wait_log(r"capture http://\S+: reopened", after=resumed)
    notify.wait_var("WATCHDOG", "1", after=back.at, count=2)
    assert daemon.proc.poll() is None, "the daemon exited on a stall; systemd's watchdog is the one to decide"
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()

    pings = notify.times("WATCHDOG", "1")
    silent = [t for t in pings if paused + 0.5 < t < resumed]  # a frame in flight may still count
    assert silent == [], "pinged while no frame arrived"
    gap = max(ping_gaps(pings))
    assert gap > WATCHDOG_USEC / 1e6, f"longest ping gap {gap:.1f} s: systemd would not have noticed the stall"
    stalled = [m["payload"] for m in daemon.messages("stats", since=paused + STALL_S + 1.0)
               if m not in daemon.messages("stats", since=resumed)]
    assert stalled and all(s["fps"] == 0.0 for s in stalled), f"stats stopped with the frames: {stalled}"
    recovered = daemon.wait_messages(lambda m: any(s["payload"]["fps"] > 0 for s in m), "stats", since=reopened)
    assert recovered, "no frames counted after the camera came back"
    assert any(m["payload"]["event"] == "appeared" for m in daemon.messages("expression", since=resumed))
    # online again with the first frame back, before its messages
    after = [m for m in daemon.messages(since=resumed) if not m["topic"].endswith("/stats")]
    assert after[0]["topic"].endswith("/available") and after[0]["payload"]["status"] == "online", after[:3]
    assert "Traceback" not in daemon.log()


def test_a_lost_picture_sends_no_state_until_frames_return(spawn, dirs, camera):
    """README: with no picture the device is `no_picture` and its faces end; the retained state is
    not refreshed while no picture comes (nothing is known then), so it expires on the broker after
    three heartbeats. With a 1 s heartbeat, a refresh would show several times over an outage of
    three heartbeats and more."""
    heartbeat_s = 1.0
    daemon = spawn(base_config(camera.url, source={"stall_timeout_s": STALL_S},
                               mqtt={"state_heartbeat_s": heartbeat_s}))
    daemon.wait_log(r"first frame processed; ready", timeout=START_TIMEOUT_S)
    daemon.wait_messages(lambda m: any(e["payload"]["event"] == "appeared" for e in m), "expression")
    paused = time.monotonic()
    camera.pause()
    daemon.wait_messages(lambda m: [s["payload"]["status"] for s in m] == ["no_picture"], "available", since=paused)
    lost = time.monotonic()
    time.sleep(3 * heartbeat_s + 1.0)  # past the state's expiry on a broker
    outage = daemon.messages("state", since=paused)
    health = daemon.messages("stats", since=lost)
    resumed = time.monotonic()
    camera.resume()
    daemon.wait_messages(lambda m: any(s["payload"]["faces"] > 0 for s in m), "state", since=resumed)
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()

    assert outage == [], f"states during the outage: {outage}"
    assert health and all(s["payload"]["fps"] == 0.0 for s in health), "the loop stopped, not only the state"


def test_sigterm_while_the_camera_hangs_says_stopped_at_once_and_exits_0(spawn, dirs, camera):
    """The reader thread is stuck in FFmpeg's read (for up to stall_timeout_s, the default 5 s) when
    SIGTERM comes. `stopped` goes out as soon as the loop wakes; the exit then waits for close(), which
    joins the capture threads for up to CLOSE_JOIN_S each and then abandons the stuck one: the 2 s
    stop budget holds even with a hung camera (capture/latest.py)."""
    daemon = spawn(base_config(camera.url, source={"stall_timeout_s": HUNG_READ_S}))
    daemon.wait_log(r"first frame processed; ready", timeout=START_TIMEOUT_S)
    daemon.wait_messages(lambda m: len(m) >= 1, "stats")
    camera.pause()
    time.sleep(READ_TIMEOUT_S)  # no frame for a while, the stall not yet detected
    sent = daemon.signal(signal.SIGTERM)
    rc, elapsed = wait_exit(daemon, sent)
    print(f"SIGTERM with a hung camera -> exit {rc} in {elapsed:.3f} s")
    assert rc == 0, daemon.log()
    stopped = [line.at for line in daemon.stdout if '"status": "stopped"' in line.text]
    assert stopped and stopped[0] - sent < STOP_BUDGET_S, "stopped was held back by the camera"
    assert daemon.messages("available")[-1]["payload"]["reason"] == "SIGTERM"
    assert elapsed < STOP_BUDGET_S, f"{elapsed:.2f} s"


def test_sigterm_with_a_hung_camera_and_a_broker_that_acknowledges_nothing_exits_within_budget(
        spawn, dirs, camera, mqtt_broker):
    """Both at once: a half-open broker connection (Wi-Fi gone, TCP not yet timed out), so the
    queue cannot drain and the sink is not 'down', and a camera stuck in its driver. The budget is
    counted from the signal and the camera closes while the queue drains."""
    relay = HeldRelay(mqtt_broker)
    relay.release()
    try:
        mqtt = {**mqtt_section(mqtt_broker), "port": relay.port}
        daemon = spawn(base_config(camera.url, source={"stall_timeout_s": HUNG_READ_S}, mqtt=mqtt))
        daemon.wait_log(r"connected to MQTT broker", timeout=START_TIMEOUT_S)
        daemon.wait_log(r"first frame processed; ready", timeout=START_TIMEOUT_S)
        relay.hold()
        time.sleep(0.5)  # frames keep coming: messages queue up unacknowledged
        camera.pause()
        time.sleep(READ_TIMEOUT_S)  # no frame for a while, the stall not yet detected
        rc, elapsed = wait_exit(daemon, daemon.signal(signal.SIGTERM))
        print(f"SIGTERM with a hung camera and a silent broker -> exit {rc} in {elapsed:.3f} s")
        assert rc == 0, daemon.log()
        assert elapsed < STOP_BUDGET_S, f"{elapsed:.2f} s to exit"
        assert re.search(r"stopping with \d+ message\(s\) not delivered", daemon.log())
    finally:
        relay.close()


def test_camera_file_that_vanishes_is_reopened_with_backoff(spawn, dirs, notify, video, tmp_path):
    camera_file = tmp_path / "camera.avi"
    shutil.copy(video, camera_file)
    daemon = spawn(base_config(str(camera_file), source={"fps": CAMERA_FPS}),
                   notify=notify, watchdog_usec=WATCHDOG_USEC)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    gone = time.monotonic()
    hidden = camera_file.rename(tmp_path / "unplugged.avi")  # the open file plays to its end
    retries = 3  # waits of 0.5, 1 and 2 s: the file comes back during the third
    failed = r"reopen failed .*no such file"
    first_failure = last_retry = daemon.wait_log(failed, after=gone)  # frames stopped here
    for _ in range(retries - 1):
        last_retry = daemon.wait_log(failed, after=last_retry + 1e-6)
    os.replace(hidden, camera_file)
    back = time.monotonic()
    reopened = daemon.wait_log(r"capture \S+camera\.avi: reopened", after=back)
    stats_after = daemon.wait_messages(lambda m: len(m) >= 2, "stats", since=reopened)
    notify.wait_var("WATCHDOG", "1", after=back)
    assert daemon.proc.poll() is None
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()

    waits = [float(w) for w in re.findall(r"reopen failed .*no such file.*retrying in ([\d.]+) s", daemon.log())]
    assert waits[:retries] == [RECONNECT_INITIAL_S * 2 ** k for k in range(retries)], waits
    assert stats_after[-1]["payload"]["fps"] > 0
    silent = [t for t in notify.times("WATCHDOG", "1") if first_failure + 0.2 < t < back]
    assert silent == [], "pinged while the camera was gone"
    assert back - first_failure > PING_S + 0.2, "the outage was too short to tell"
    assert "Traceback" not in daemon.log()


def test_camera_that_never_delivers_exits_1_without_ready(spawn, dirs, notify, camera):
    """Waited for FIRST_FRAME_TIMEOUT_S, then exit 1 for systemd to restart: every cycle takes
    that plus RestartSec, so the unit's start limit (5 in 120 s) never gives up on the camera."""
    camera.pause()
    daemon = spawn(base_config(camera.url, source={"stall_timeout_s": STALL_S}), notify=notify)
    rc, elapsed = wait_exit(daemon, daemon.started_at, timeout=START_TIMEOUT_S + FIRST_FRAME_TIMEOUT_S)
    log = daemon.log()
    assert rc == 1, log
    assert re.search(r"capture http://\S+: source 'http://\S+': cannot open or read a frame.*waiting for it", log), log
    assert re.search(rf"no frame from http://\S+ within {FIRST_FRAME_TIMEOUT_S:.0f} s of start", log), log
    assert elapsed > FIRST_FRAME_TIMEOUT_S and notify.with_var("READY") == []
    # Never "online", and no "no face" state that nobody saw: Home Assistant shows it unavailable.
    assert [(m["payload"]["status"], m["payload"].get("reason")) for m in daemon.messages("available")] == [
        ("stopped", "pipeline failure")]
    assert daemon.messages("state") == []


def test_camera_away_at_start_is_waited_for_without_a_restart(spawn, dirs, notify, camera):
    """A USB camera still enumerating at boot, an IP camera rebooting: no exit, READY=1 once it delivers.
    Its URL carries passwords the way IP cameras take them, and none reaches the log (the journal)."""
    camera.pause()
    url = camera.url.replace("http://", "http://admin:Pa55-in-user@") + "?user=admin&pwd=Pa55-in-query"
    daemon = spawn(base_config(url, source={"stall_timeout_s": STALL_S}), notify=notify)
    waiting = daemon.wait_log(r"capture http://admin:\*\*\*@\S+pwd=\*\*\*: .*waiting for it", timeout=START_TIMEOUT_S)
    time.sleep(1.0)
    camera.resume()
    assert [m for m in daemon.messages() if not m["topic"].endswith("/stats")] == [], "announced without a picture"
    ready = notify.wait_var("READY", "1", after=waiting, timeout=WAIT_S)
    assert daemon.proc.poll() is None
    # health (stats) may come while waiting; "online" comes first of the rest, then the frame's messages
    first = [m for m in daemon.wait_messages(lambda got: any(not m["topic"].endswith("/stats") for m in got))
             if not m["topic"].endswith("/stats")][0]
    assert first["topic"].endswith("/available") and first["payload"]["status"] == "online", first
    daemon.wait_messages(lambda m: any(e["payload"]["event"] == "appeared" for e in m), "expression")
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0 and ready.at > waiting, daemon.log()
    assert "Pa55" not in daemon.log()


@pytest.mark.parametrize("when", ["start", "reload"])
def test_sigterm_while_a_hung_camera_opens_exits_within_budget(spawn, dirs, notify, video, camera, when):
    """Opening a network camera that accepts and never streams blocks in FFmpeg for up to
    stall_timeout_s; the signal must not wait for it, at start or in a SIGHUP to that camera."""
    hung = {"stall_timeout_s": HUNG_READ_S}
    config = base_config(camera.url if when == "start" else str(video), source={**hung, "fps": CAMERA_FPS})
    if when == "start":
        camera.pause()
        daemon = spawn(config, notify=notify)
        opening = daemon.wait_log(r"model \S+ on ", timeout=START_TIMEOUT_S)  # the camera opens next
    else:
        daemon = spawn(config, notify=notify)
        notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
        camera.pause()
        config["source"]["uri"] = camera.url
        daemon.config_path.write_text(toml_text(config))
        opening = daemon.signal(signal.SIGHUP)
    time.sleep(0.5)  # inside the open
    rc, elapsed = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()
    assert elapsed < STOP_BUDGET_S, f"{elapsed:.2f} s after SIGTERM, {when}"
    assert opening > 0 and "Traceback" not in daemon.log()


# --- the model ------------------------------------------------------------------------------------

def _model_copy(folder: Path, name: str, data: bytes, card_changes: dict | None = None, fix_sha: bool = True) -> Path:
    """``data`` as <name>.tflite with the packaged card beside it, changed by ``card_changes``;
    ``fix_sha`` updates the card's sha256 to the new bytes (a card written for this file)."""
    card = json.loads(card_path_for(PACKAGED_MODEL).read_text())
    card.update(card_changes or {})
    if fix_sha:
        card["sha256"] = hashlib.sha256(data).hexdigest()
    path = folder / f"{name}.tflite"
    path.write_bytes(data)
    card_path_for(path).write_text(json.dumps(card))
    return path


BAD_MODELS = {
    # name: (make the model in a folder, what stderr must say besides the path)
    "missing": (lambda d: d / "missing.tflite", r"file not found"),
    "truncated": (lambda d: _model_copy(d, "truncated", PACKAGED_MODEL.read_bytes()[:200_000], fix_sha=False),
                  r"does not match its card's sha256"),
    "truncated_with_its_card": (lambda d: _model_copy(d, "cut", PACKAGED_MODEL.read_bytes()[:200_000]),
                                r"not a valid TFLite model"),
    "blazeface_with_a_copied_card": (lambda d: _model_copy(d, "blazeface", BLAZEFACE.read_bytes()),
                                     r"input is float32 \(1, 128, 128, 3\), its card says uint8 \(1, 48, 48, 1\)"),
    "card_of_another_input_size": (lambda d: _model_copy(d, "other", PACKAGED_MODEL.read_bytes(),
                                                         {"input_size": [64, 64]}),
                                   r"its card says uint8 \(1, 64, 64, 1\)"),
}


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_bad_model_exits_2_naming_the_file(spawn, dirs, notify, video, tmp_path, kind):
    make, reason = BAD_MODELS[kind]
    model = make(tmp_path)
    daemon = spawn(base_config(str(video), classifier={"model": str(model)}), notify=notify)
    rc, _ = wait_exit(daemon, daemon.started_at, timeout=START_TIMEOUT_S)
    log = daemon.log()
    assert rc == 2, log
    assert re.search(rf"^(config )?error: .*{re.escape(str(model))}.*{reason}", log, re.M), log
    assert "Traceback" not in log
    assert notify.with_var("READY") == [] and daemon.messages() == [], "started publishing with a bad model"


FAILING = [sys.executable, str(Path(__file__).with_name("daemon_proc.py")), "--fail-invoke-after"]


@pytest.mark.parametrize("good_invokes", [0, 10])
def test_model_failing_mid_run_exits_1_and_says_stopped(spawn, dirs, notify, video, good_invokes):
    """The interpreter's invoke() raises (as a TFLite kernel error would) from a given call on;
    with 0 good calls the very first frame fails, so READY=1 must never have been sent."""
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}), notify=notify,
                   argv=FAILING[1:] + [str(good_invokes)])
    rc, _ = wait_exit(daemon, daemon.started_at, timeout=START_TIMEOUT_S)
    log = daemon.log()
    assert rc == 1, log
    assert "pipeline failed mid-run; exiting for systemd to restart" in log
    assert "RuntimeError: tensorflow/lite/kernels/conv.cc" in log
    assert [n.fields for n in notify.messages][-1] == {"STOPPING": "1"}
    assert bool(notify.with_var("READY")) == (good_invokes > 0)
    available = [m["payload"] for m in daemon.messages("available")]
    # "online" goes with READY=1: a daemon that never processed a frame never claimed to be up
    assert [a["status"] for a in available] == (["online", "stopped"] if good_invokes else ["stopped"])
    assert available[-1]["reason"] == "pipeline failure"


# --- SIGHUP ---------------------------------------------------------------------------------------

def test_sighup_applies_a_valid_config_and_keeps_the_old_one_on_an_invalid(spawn, dirs, notify, video):
    config = base_config(str(video), source={"fps": CAMERA_FPS})
    daemon = spawn(config, notify=notify)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    daemon.wait_messages(lambda m: len(m) >= 1, "expression")  # a face was seen under "labels"

    config["privacy"] = {"mode": "presence"}
    daemon.config_path.write_text(toml_text(config))
    hup = daemon.signal(signal.SIGHUP)
    applied = daemon.wait_log(r"SIGHUP: config reloaded \(changed: privacy\)", after=hup)
    reloading = notify.wait_var("RELOADING", "1", after=hup)
    ready = notify.wait_var("READY", "1", after=reloading.at)
    assert int(reloading.fields["MONOTONIC_USEC"]) > 0
    stats = daemon.wait_messages(lambda m: len(m) >= 2, "stats", since=applied)
    assert {s["payload"]["privacy"] for s in stats} == {"presence"}
    late = daemon.messages(since=ready.at + 0.5)
    assert late and not [m for m in late if m["topic"].endswith("/expression")], "labels after presence mode"
    assert {m["payload"]["mode"] for m in late if m["topic"].endswith("/state")} <= {"presence"}

    periodic = notify.wait_note(lambda n: "STATUS" in n.fields and "READY" not in n.fields, after=ready.at,
                                timeout=STATUS_INTERVAL_S + WAIT_S)
    for broken in ('[tracker]\niou_match = 7.0\n', '[source\nuri = "x"\n'):
        daemon.config_path.write_text(broken)
        hup = daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_log(r"SIGHUP: new config rejected, still running on the old one", after=hup)
        reloading = notify.wait_var("RELOADING", "1", after=hup)
        back = notify.wait_var("READY", "1", after=reloading.at)
        # `systemctl status` keeps showing the running figures, not a reset "fps=0.0"
        assert re.fullmatch(r"fps=(\d+\.\d) faces=\d", back.fields["STATUS"]) and \
            not back.fields["STATUS"].startswith("fps=0.0"), (back.fields, periodic.fields)
        stats = daemon.wait_messages(lambda m: len(m) >= 2, "stats", since=rejected)
        assert {s["payload"]["privacy"] for s in stats} == {"presence"}
    log = daemon.log()
    assert re.search(r"rejected.*tracker\.iou_match = 7\.0 .*out of range", log), log
    assert re.search(r"rejected.*config file \S+config\.toml", log), log
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, log
    payloads = [m["payload"] for m in daemon.messages()]
    assert [p["seq"] for p in payloads] == list(range(1, len(payloads) + 1)), "seq restarted or skipped at a reload"
    assert [(p["status"], p.get("reason")) for p in payloads if "status" in p] == [
        ("online", None), ("stopped", "reload"), ("online", None), ("stopped", "SIGTERM")]


def test_sighup_rereads_a_model_replaced_in_place_and_refuses_a_broken_one(spawn, dirs, notify, video, tmp_path):
    """A retrained model copied over the old one (or a renewed TLS certificate): same path, new file."""
    model = tmp_path / "models" / PACKAGED_MODEL.name
    model.parent.mkdir()
    shutil.copy(PACKAGED_MODEL, model)
    shutil.copy(card_path_for(PACKAGED_MODEL), card_path_for(model))
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}, classifier={"model": str(model)}),
                   notify=notify)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    replaced = model.with_name("new.tflite")
    shutil.copy(PACKAGED_MODEL, replaced)
    os.replace(replaced, model)  # how a deploy swaps a file: a new inode at the same path
    hup = daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"SIGHUP: config reloaded \(changed: classifier\)", after=hup)
    model.write_bytes(model.read_bytes()[:-100])  # truncated in place: no longer the file its card names
    hup = daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"SIGHUP: new config rejected, still running on the old one: .*does not match its card", after=hup)
    running = daemon.wait_messages(lambda m: len(m) >= 1, "stats", since=time.monotonic())
    assert running and running[-1]["payload"]["fps"] > 0 and daemon.proc.poll() is None, daemon.log()
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()


def test_sighup_rejected_in_part_changes_nothing(spawn, dirs, notify, video, tmp_path):
    """A valid tracker change next to a source that cannot open: nothing may be applied, so the
    current track goes on (no `gone`, no new track id) and the old source keeps delivering."""
    config = base_config(str(video), source={"fps": CAMERA_FPS})
    daemon = spawn(config, notify=notify)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    appeared = daemon.wait_messages(lambda m: len(m) >= 1, "expression")[0]["payload"]

    config["tracker"] = {"iou_match": 0.5}
    config["source"]["uri"] = str(tmp_path / "no-such-camera.avi")
    daemon.config_path.write_text(toml_text(config))
    hup = daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_log(r"SIGHUP: new config rejected.*no-such-camera\.avi", after=hup)
    daemon.wait_messages(lambda m: len(m) >= 2, "stats", since=rejected)
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()
    events = [m["payload"] for m in daemon.messages("expression")]
    tracks = {e["track"] for e in events}
    assert tracks == {appeared["track"]}, f"the pipeline was rebuilt by a rejected reload: {events}"
    assert [e["event"] for e in events if e["event"] != "changed"] == ["appeared", "gone"]  # gone at stop


# --- stopping -------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_0_within_budget_and_says_stopped(spawn, dirs, notify, video, mqtt_broker,
                                                            mqtt_subscriber, signum):
    mqtt = mqtt_section(mqtt_broker)
    sub = mqtt_subscriber([f"{mqtt['prefix']}/#"])
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}, mqtt=mqtt), notify=notify)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/stats") for m in msgs), WAIT_S)
    rc, elapsed = wait_exit(daemon, daemon.signal(signum))
    print(f"{signal.Signals(signum).name} -> exit {rc} in {elapsed:.3f} s")
    assert rc == 0, daemon.log()
    assert elapsed < STOP_BUDGET_S, f"{elapsed:.2f} s to exit"
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/available") and m.json["status"] == "stopped"
                                         for m in msgs), WAIT_S)
    last = sub.on("available")[-1].json
    assert last["status"] == "stopped" and last["reason"] == signal.Signals(signum).name
    assert [n.fields for n in notify.messages][-1] == {"STOPPING": "1"}
    assert not LOG_PROBLEM.search(daemon.log()), daemon.log()


def test_kill_9_leaves_nothing_behind_and_the_next_start_is_clean(spawn, dirs, notify, video, mqtt_broker,
                                                                  mqtt_subscriber):
    mqtt = mqtt_section(mqtt_broker)
    sub = mqtt_subscriber([f"{mqtt['prefix']}/+/available"])
    # stall_timeout_s under half the 2 s watchdog, as check_fits_watchdog asks (else it warns)
    config = base_config(str(video), source={"fps": CAMERA_FPS, "stall_timeout_s": STALL_S}, mqtt=mqtt)
    statuses = lambda: [m.json["status"] for m in sub.on("available")]  # noqa: E731

    first = spawn(config, notify=notify, watchdog_usec=WATCHDOG_USEC)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    assert sub.wait_for(lambda _: statuses()[-1:] == ["online"], WAIT_S)
    first.proc.kill()
    assert first.wait() == -signal.SIGKILL
    assert sub.wait_for(lambda _: statuses()[-1:] == ["offline"], WAIT_S), statuses()  # the broker's Last Will
    assert dirs.contents() == {}

    killed_at = time.monotonic()
    second = spawn(config, notify=notify, watchdog_usec=WATCHDOG_USEC)
    notify.wait_var("READY", "1", after=killed_at, timeout=START_TIMEOUT_S)
    notify.wait_var("WATCHDOG", "1", after=killed_at, count=2)
    assert sub.wait_for(lambda _: statuses()[-1:] == ["online"], WAIT_S), statuses()
    rc, _ = wait_exit(second, second.signal(signal.SIGTERM))
    assert rc == 0
    assert not LOG_PROBLEM.search(second.log()), second.log()
    assert sub.wait_for(lambda _: statuses()[-1:] == ["stopped"], WAIT_S), statuses()
    assert dirs.contents() == {}


# --- privacy: files -------------------------------------------------------------------------------

WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_TMPFILE")
CHANGING_CALLS = ("creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "link",
                  "linkat", "symlink", "symlinkat", "truncate", "mknod", "mknodat")
OPEN_CALLS = ("open", "openat", "openat2")
TRACED = ",".join(OPEN_CALLS + CHANGING_CALLS + ("bind",))


def file_writes(trace: str) -> list[str]:
    """strace lines that create, change or remove a file, or bind a unix socket path."""
    bad = []
    for line in trace.splitlines():
        call = re.match(r"\d+\s+(\w+)\(", line)
        if not call:
            continue  # "<... resumed>" halves: their arguments were on the first half
        name = call.group(1)
        if name in OPEN_CALLS and not WRITE_FLAGS.search(line):
            continue
        if name == "bind" and not re.search(r'sun_path="[^@\\]', line):
            continue  # inet or abstract sockets: no file
        bad.append(line)
    return bad


def test_a_run_over_video_writes_no_file_anywhere(spawn, dirs, video, tmp_path):
    strace = shutil.which("strace")
    trace = tmp_path / "strace.txt"
    assert strace, "strace is needed to see every open() of the run (.ci/run installs it)"
    wrapper = [strace, "-f", "-qq", "-o", str(trace), "-e", f"trace={TRACED}", "-e", "signal=none"]
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}), wrapper=wrapper,
                   extra_args=["--duration", "3"])
    rc = daemon.wait(START_TIMEOUT_S)
    assert rc == 0, daemon.log()
    assert any(m["topic"].endswith("/expression") for m in daemon.messages()), "no face was processed"
    assert dirs.contents() == {}, "files left in cwd, HOME or TMPDIR"
    text = trace.read_text()
    assert str(video) in text, "the trace missed the daemon's own opens"
    assert file_writes(text) == []


# --- privacy: what the daemon says besides its messages -------------------------------------------

def test_log_lines_carry_no_payload_even_at_debug(spawn, dirs, notify, video, mqtt_broker, mqtt_subscriber):
    """PRIVACY.md: the publisher's log lines cover connection events only, never payloads: the
    journal keeps the log (stderr) on disk. A run publishing to a broker, at the most verbose level."""
    mqtt = mqtt_section(mqtt_broker)
    sub = mqtt_subscriber([f"{mqtt['prefix']}/#"])
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}, mqtt=mqtt, service={"log_level": "DEBUG"}),
                   notify=notify)
    notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    assert sub.wait_for(lambda msgs: sub.on("expression") and sub.on("stats"), WAIT_S)
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()
    assert sub.wait_for(lambda msgs: any(m.json.get("status") == "stopped" for m in sub.on("available")), WAIT_S)
    log = daemon.log()
    assert "connected to MQTT broker" in log  # the publisher did log

    tracks = {m.json["track"] for m in sub.on("expression")}
    keys = {key for m in sub.messages for key in m.json}
    traces = (tracks | {m.json["ts"] for m in sub.messages if m.json.get("ts")}
              | {f"{q}{key}{q}" for key in keys for q in "'\""})  # a payload formatted as JSON or as a dict
    assert tracks and {"seq", "label"} <= keys
    leaked = sorted(trace for trace in traces if trace in log)
    assert leaked == [], f"payload content in the log: {leaked}\n{log}"


def test_aggregate_mode_status_line_shows_no_face_count(spawn, dirs, notify, video):
    """PRIVACY.md: in aggregate mode systemd's STATUS= line (`systemctl status`, readable by any
    local user) shows no face count, which below k_min would tell whether someone is there. A window
    released with k_min = 1 shows that faces were in view meanwhile."""
    privacy = {"mode": "aggregate", "k_min": 1, "aggregate_window_s": 5.0}
    daemon = spawn(base_config(str(video), source={"fps": CAMERA_FPS}, privacy=privacy), notify=notify)
    ready = notify.wait_var("READY", "1", timeout=START_TIMEOUT_S)
    window = daemon.wait_messages(lambda m: len(m) >= 1, "aggregate",
                                  timeout=2 * privacy["aggregate_window_s"] + WAIT_S)
    periodic = notify.wait_note(lambda n: "STATUS" in n.fields and "READY" not in n.fields, after=ready.at,
                                timeout=STATUS_INTERVAL_S + WAIT_S)
    rc, _ = wait_exit(daemon, daemon.signal(signal.SIGTERM))
    assert rc == 0, daemon.log()

    assert window[0]["payload"]["tracks"] >= 1 and periodic.at > ready.at
    assert periodic.fields["STATUS"].startswith("fps="), periodic.fields
    statuses = [n.fields["STATUS"] for n in notify.with_var("STATUS")]
    assert not [status for status in statuses if "faces=" in status], statuses
