"""The ``edge-fer`` command end to end (issues 3 and 4): the installed console script in
subprocesses, the real model and detector, a real mosquitto.

Each daemon run is a module fixture shared by the tests that read it. The shipped model may be
untrained: tests check that labels are among the 7 (+ "uncertain"), never which one is predicted.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import cv2
import jsonschema
import numpy as np
import pytest

from edge_fer import LABELS
from edge_fer.config import TrackerConfig, tomllib
from edge_fer.model_card import PACKAGED_MODEL
from edge_fer.publish import load_schema
from edge_fer.track import iou
from fixtures_media import ASTRONAUT_FACE_CENTRE, ASTRONAUT_FACE_PX, BACKGROUND_BGR, read_astronaut
from mqtt_broker import Broker, Received

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "edge_fer" / "data" / "astronaut.jpg"
EDGE_FER = Path(sys.executable).with_name("edge-fer")
STATE_LABELS = {*LABELS, "uncertain"}
MAX_STRING_LEN = 64  # PRIVACY.md: no published string is longer
FORBIDDEN_KEYS = {"box", "bbox", "boxes", "x", "y", "w", "h", "width", "height", "landmarks", "keypoints",
                  "embedding", "pixels", "image", "frame", "crop", "face", "scores", "probabilities"}
TOPIC_KINDS = {"available", "expression", "state", "stats", "aggregate"}
SECRET = "s3cret-Pa55word-never-printed"

RUN_TIMEOUT_S = 60.0  # one subprocess, start to exit, on a loaded 2-core machine
WAIT_S = 20.0  # for a message to arrive
STOP_WITHIN_S = 2.0  # SIGTERM -> exit (issue 4)
OUTAGE_S = 4.0  # broker down mid-run
STATS_EVERY_S = 1  # mqtt.stats_interval_s for the MQTT runs, so stats arrive during a short run

# The video: the face moves, leaves the frame for longer than the tracker's max_missed_s, comes back.
VIDEO_FPS = 15
VIDEO_SIZE = (320, 240)
VIDEO_FACE_FRACTION = 0.4  # face side / frame height: ~96 px, well inside BlazeFace short range
VIDEO_STEP_PX = 2  # per frame: consecutive boxes overlap far above the tracker's IoU gate
VISIBLE_S = 1.2
ABSENT_S = TrackerConfig().max_missed_s + 1.0
# The known face region of the 512x512 photo (BlazeFace full-range box, see fixtures_media).
ASTRONAUT_FACE_BOX = (ASTRONAUT_FACE_CENTRE[0] - ASTRONAUT_FACE_PX / 2,
                      ASTRONAUT_FACE_CENTRE[1] - ASTRONAUT_FACE_PX / 2, ASTRONAUT_FACE_PX, ASTRONAUT_FACE_PX)
MIN_FACE_IOU = 0.5


# --- running the CLI --------------------------------------------------------------------------

def cli_env(**extra: str) -> dict[str, str]:
    """This environment without edge-fer settings or systemd's variables, plus ``extra``."""
    drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM",
            "CREDENTIALS_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FER_") and k not in drop}
    return {**env, **extra}


def edge_fer(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGE_FER), *args], capture_output=True, text=True, env=env or cli_env(),
                          cwd=cwd, timeout=timeout)


def daemon(args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """``edge-fer run`` in the background, stdout and stderr to files (a pipe could fill up)."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "stdout").open("wb") as out, (logs / "stderr").open("wb") as err:
        return subprocess.Popen([str(EDGE_FER), "run", *args], stdout=out, stderr=err, env=env)


def end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(RUN_TIMEOUT_S)


@pytest.fixture(scope="module", autouse=True)
def console_script() -> None:
    if not EDGE_FER.exists():
        pytest.skip(f"no {EDGE_FER}: install the package first (pip install -e . --no-deps)")


# --- reading what it published ---------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One published message, from stdout or from the broker."""

    topic: str
    payload: dict[str, Any]
    retain: bool = False

    @property
    def kind(self) -> str:
        return self.topic.rsplit("/", 1)[1]


def stdout_lines(text: str) -> list[Line]:
    """Every stdout line must be one JSON message; logs belong on stderr."""
    lines = []
    for raw in text.splitlines():
        obj = json.loads(raw)
        assert set(obj) == {"topic", "payload"}, raw
        lines.append(Line(obj["topic"], obj["payload"]))
    return lines


def from_broker(messages: list[Received]) -> list[Line]:
    return [Line(m.topic, m.json, m.retain) for m in messages]


def validate(line: Line) -> None:
    assert line.kind in TOPIC_KINDS, line.topic
    jsonschema.validate(line.payload, load_schema(line.kind), cls=jsonschema.Draft202012Validator)


def events(lines: list[Line]) -> list[dict[str, Any]]:
    return [line.payload for line in lines if line.kind == "expression"]


def statuses(lines: list[Line]) -> list[str]:
    return [line.payload["status"] for line in lines if line.kind == "available"]


def first_arrivals(lines: list[Line]) -> list[int]:
    """seq in order of first arrival: QoS 1 may repeat a message, and a re-subscription replays
    retained ones; the Last Will has no seq."""
    seen: set[int] = set()
    out = []
    for line in lines:
        seq = line.payload.get("seq")
        if seq is not None and seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


def is_subsequence(wanted: list[Any], got: list[Any]) -> bool:
    it = iter(got)
    return all(any(w == g for g in it) for w in wanted)


def milestones(lines: list[Line]) -> list[str]:
    """available/expression as "kind:status-or-event", other topics as their kind."""
    out = []
    for line in lines:
        detail = line.payload.get("status") or line.payload.get("event")
        out.append(f"{line.kind}:{detail}" if line.kind in ("available", "expression") else line.kind)
    return out


def assert_anonymous(value: Any, where: str = "") -> None:
    """No box or pixels under any name, no long string, no array longer than the label count."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert key.lower() not in FORBIDDEN_KEYS, f"{where}.{key}"
            assert_anonymous(key, f"{where}.{key} (key)")
            assert_anonymous(item, f"{where}.{key}")
    elif isinstance(value, list):
        assert len(value) <= len(LABELS), f"{where}: array of {len(value)}"
        for i, item in enumerate(value):
            assert_anonymous(item, f"{where}[{i}]")
    elif isinstance(value, str):
        assert len(value) <= MAX_STRING_LEN, f"{where}: string of {len(value)} chars"
    else:
        assert value is None or isinstance(value, (bool, int, float)), f"{where}: {type(value).__name__}"


# --- media --------------------------------------------------------------------------------------

def face_at(photo: np.ndarray, centre_x: float) -> np.ndarray:
    """A VIDEO_SIZE frame with the astronaut's face centred at (centre_x, middle)."""
    width, height = VIDEO_SIZE
    scale = VIDEO_FACE_FRACTION * height / ASTRONAUT_FACE_PX
    matrix = cv2.getRotationMatrix2D(ASTRONAUT_FACE_CENTRE, 0.0, scale)
    matrix[:, 2] += (centre_x - ASTRONAUT_FACE_CENTRE[0], height / 2 - ASTRONAUT_FACE_CENTRE[1])
    return cv2.warpAffine(photo, matrix, (width, height), borderValue=BACKGROUND_BGR)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Face moving right for VISIBLE_S, out of the frame for ABSENT_S (> max_missed_s), back moving
    left for VISIBLE_S. MJPG .avi: OpenCV writes it without extra codecs."""
    path = tmp_path_factory.mktemp("video") / "comes-and-goes.avi"
    photo = read_astronaut()
    width, _ = VIDEO_SIZE
    visible, absent = round(VISIBLE_S * VIDEO_FPS), round(ABSENT_S * VIDEO_FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, VIDEO_SIZE)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(visible):
        writer.write(face_at(photo, width * 0.3 + VIDEO_STEP_PX * i))
    for _ in range(absent):
        writer.write(face_at(photo, -2 * width))  # far off the left edge: only the wall is in view
    for i in range(visible):
        writer.write(face_at(photo, width * 0.7 - VIDEO_STEP_PX * i))
    writer.release()
    return path


# --- classify ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classify_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classify")
    (folder / "not-a-photo.jpg").write_text("just text, not JPEG\n")
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320, 3), BACKGROUND_BGR, np.uint8))
    return folder


@pytest.fixture(scope="module")
def classified_json() -> subprocess.CompletedProcess[str]:
    return edge_fer("classify", "--json", str(ASTRONAUT))


def test_classify_json_finds_one_face_on_the_astronaut(classified_json):
    assert classified_json.returncode == 0, classified_json.stderr
    (line,) = classified_json.stdout.splitlines()
    record = json.loads(line)
    assert set(record) == {"image", "faces"} and record["image"] == str(ASTRONAUT)
    (face,) = record["faces"]
    assert set(face) == {"box", "label", "confidence", "scores"}
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert iou(tuple(face["box"]), ASTRONAUT_FACE_BOX) >= MIN_FACE_IOU, face["box"]
    assert face["label"] in LABELS
    assert set(face["scores"]) == set(LABELS)
    assert all(0.0 <= p <= 1.0 for p in face["scores"].values())
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=0.03)  # int8 outputs, rounded
    assert face["confidence"] == max(face["scores"].values()) == face["scores"][face["label"]]


def test_classify_reports_an_unreadable_file_and_still_prints_the_others(classify_dir):
    bad, missing = classify_dir / "not-a-photo.jpg", classify_dir / "missing.png"
    result = edge_fer("classify", "--json", str(bad), str(ASTRONAUT), str(missing))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["image"] == str(ASTRONAUT)
    errors = [e for e in result.stderr.splitlines() if e.startswith("error:")]
    assert len(errors) == 2
    assert str(bad) in errors[0] and str(missing) in errors[1]
    assert "Traceback" not in result.stderr


def test_classify_plain_output_is_one_readable_line_per_image(classify_dir):
    wall = classify_dir / "wall.png"
    result = edge_fer("classify", str(ASTRONAUT), str(wall))
    assert result.returncode == 0, result.stderr
    face_line, wall_line = result.stdout.splitlines()
    labels = "|".join(LABELS)
    assert re.fullmatch(rf"{re.escape(str(ASTRONAUT))}: ({labels}) [01]\.\d\d at \[\d+, \d+, \d+, \d+\]", face_line)
    assert wall_line == f"{wall}: no face"


def test_classify_takes_a_folder_as_run_does(classify_dir):
    """Its images in name order; the text file named .jpg is reported, the rest still printed."""
    result = edge_fer("classify", "--json", str(classify_dir))
    assert result.returncode == 1
    assert [json.loads(line)["image"] for line in result.stdout.splitlines()] == [str(classify_dir / "wall.png")]
    assert "not-a-photo.jpg" in result.stderr and "Traceback" not in result.stderr


def test_classify_refuses_the_daemon_flags_it_would_ignore():
    result = edge_fer("classify", "--source", "0", str(ASTRONAUT))
    assert result.returncode == 2 and "unrecognized arguments: --source" in result.stderr


@pytest.mark.parametrize("flag, value", [("--max-frames", "-1"), ("--duration", "-5")])
def test_a_negative_run_limit_is_refused_not_taken_as_reached(flag, value):
    """-1 is a common guess for "no limit"; it must not stop the daemon at once with exit 0."""
    result = edge_fer("run", flag, value)
    assert result.returncode == 2 and result.stdout == ""
    assert f"argument {flag}: {value} is negative; give 0 for no limit" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_duration_that_is_no_number_is_refused_not_run_for_ever(value):
    result = edge_fer("run", "--duration", value)
    assert result.returncode == 2 and f"argument --duration: {value} is not a number of seconds" in result.stderr


# --- run, no broker: JSON lines on stdout -------------------------------------------------------

def test_run_ends_when_its_output_reader_goes_away():
    """`edge-fer run | head -2`: like any Unix tool, it ends once nothing reads its output."""
    proc = subprocess.Popen([str(EDGE_FER), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(), text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert json.loads(first)["payload"]["status"] == "online"
    proc.stdout.close()  # the reader exits
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 1, err
    assert "the output's reader is gone; stopping" in err and "Traceback" not in err

@dataclass(frozen=True)
class SandboxedRun:
    result: subprocess.CompletedProcess[str]
    lines: list[Line]
    seconds: float
    left_behind: list[Path]  # files in HOME, TMPDIR or the working directory afterwards


def sandboxed_run(root: Path, *args: str) -> SandboxedRun:
    """``edge-fer run`` with HOME, TMPDIR and the working directory empty directories of its own."""
    home, tmp, cwd = root / "home", root / "tmp", root / "cwd"
    for d in (home, tmp, cwd):
        d.mkdir(parents=True)
    env = {k: v for k, v in cli_env(HOME=str(home), TMPDIR=str(tmp)).items() if not k.startswith("XDG_")}
    start = time.monotonic()
    result = edge_fer("run", "--config", os.devnull, *args, env=env, cwd=cwd)
    seconds = time.monotonic() - start
    return SandboxedRun(result, stdout_lines(result.stdout), seconds,
                        [p for d in (home, tmp, cwd) for p in d.rglob("*")])


MAX_FRAMES = 20
DURATION_S = 1.5


@pytest.fixture(scope="module")
def max_frames_run(tmp_path_factory: pytest.TempPathFactory) -> SandboxedRun:
    return sandboxed_run(tmp_path_factory.mktemp("max-frames"), "--max-frames", str(MAX_FRAMES))


@pytest.fixture(scope="module")
def duration_run(tmp_path_factory: pytest.TempPathFactory) -> SandboxedRun:
    return sandboxed_run(tmp_path_factory.mktemp("duration"), "--duration", str(DURATION_S))


def test_run_max_frames_publishes_the_whole_lifecycle_on_stdout(max_frames_run):
    run = max_frames_run
    assert run.result.returncode == 0, run.result.stderr
    for line in run.lines:
        validate(line)
    steps = milestones(run.lines)
    assert steps[0] == "available:online" and steps[-1] == "available:stopped"
    assert is_subsequence(["available:online", "expression:appeared", "state", "stats", "available:stopped"],
                          steps), steps
    assert [line.payload["seq"] for line in run.lines] == list(range(1, len(run.lines) + 1))
    assert all(e["label"] in STATE_LABELS for e in events(run.lines))
    stats = [line.payload for line in run.lines if line.kind == "stats"]
    assert stats[-1]["frames"] == MAX_FRAMES
    assert run.lines[-1].payload["reason"] == "run limit"
    assert "Traceback" not in run.result.stderr


def test_run_writes_no_file(max_frames_run, duration_run):
    assert max_frames_run.left_behind == [] and duration_run.left_behind == []


def test_run_duration_stops_by_itself(duration_run):
    run = duration_run
    assert run.result.returncode == 0, run.result.stderr
    assert statuses(run.lines) == ["online", "stopped"]
    assert run.lines[-1].payload["reason"] == "run limit"
    stats = [line.payload for line in run.lines if line.kind == "stats"]
    assert stats[-1]["uptime_s"] >= DURATION_S
    assert run.seconds < DURATION_S + RUN_TIMEOUT_S / 2  # start-up included; no hang


@pytest.fixture(scope="module")
def video_run(video: Path) -> subprocess.CompletedProcess[str]:
    """The video once, to its end (source.loop off), so the run ends by itself."""
    return edge_fer("run", "--config", os.devnull, "--source", str(video),
                    env=cli_env(EDGE_FER_SOURCE__LOOP="false"))


def test_face_that_leaves_and_returns_gets_a_new_track(video_run):
    assert video_run.returncode == 0, video_run.stderr
    lines = stdout_lines(video_run.stdout)
    for line in lines:
        validate(line)
    evs = [e for e in events(lines) if e["event"] != "changed"]  # a trained model may change its mind
    assert [e["event"] for e in evs] == ["appeared", "gone", "appeared", "gone"]  # the last at shutdown
    first, second = evs[0]["track"], evs[2]["track"]
    assert evs[1]["track"] == first and evs[3]["track"] == second and first != second
    assert 0 < evs[1]["duration_s"] <= VISIBLE_S
    assert all(e["label"] in STATE_LABELS for e in evs)
    assert statuses(lines) == ["online", "stopped"]
    assert lines[-1].payload["reason"] == "source ended"


def test_a_covered_camera_says_no_picture_not_that_nobody_is_there(tmp_path):
    """In a car, a hand or a cap over the lens still gives frames, black ones: without a check the
    driver would read as absent. 2 s of face, 3 s covered (black under sensor noise), 2 s of face."""
    import cv2

    fps, size = 15, (640, 480)
    face = cv2.resize(read_astronaut(), size)
    covered = np.clip(np.random.default_rng(0).normal(0, 6, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "covered.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for image in [face] * (2 * fps) + [covered] * (3 * fps) + [face] * (2 * fps):
        writer.write(image)
    writer.release()
    result = edge_fer("run", "--config", os.devnull, "--source", str(path),
                      env=cli_env(EDGE_FER_SOURCE__LOOP="false", EDGE_FER_SOURCE__FPS=str(fps)))
    assert result.returncode == 0, result.stderr
    lines = stdout_lines(result.stdout)
    for line in lines:
        validate(line)
    assert statuses(lines) == ["online", "no_picture", "online", "stopped"]
    (blind,) = [line.payload for line in lines if line.kind == "available" and line.payload["status"] == "no_picture"]
    assert blind["reason"] == "the camera shows nothing (covered or dark)"
    kinds = [(line.kind, line.payload.get("status") or line.payload.get("event")) for line in lines]
    during = kinds[kinds.index(("available", "no_picture")):kinds.index(("available", "online"), 1)]
    assert ("expression", "gone") in during and not [k for k in during if k[0] == "state"], during
    assert [e["event"] for e in events(lines) if e["event"] != "changed"] == ["appeared", "gone", "appeared", "gone"]


def test_video_output_carries_no_box_pixels_or_long_field(video_run):
    assert video_run.returncode == 0 and video_run.stdout.strip(), video_run.stderr
    for raw in video_run.stdout.splitlines():
        assert_anonymous(json.loads(raw))


# --- run against a real broker --------------------------------------------------------------------

def mqtt_args(broker: Broker, *extra: str) -> list[str]:
    return ["--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--device-id", "test-dev", *extra]


def mqtt_env(prefix: str, **extra: str) -> dict[str, str]:
    """Each run its own topic prefix and client id: runs share the session broker."""
    return cli_env(EDGE_FER_MQTT__PREFIX=prefix, EDGE_FER_MQTT__CLIENT_ID=f"edge-fer-{prefix}",
                   EDGE_FER_MQTT__STATS_INTERVAL_S=str(STATS_EVERY_S), **extra)


def online_seqs(msgs: list[Received]) -> set[int]:
    """One per connection of the daemon (a re-subscription replays the retained one: same seq)."""
    return {m.json["seq"] for m in msgs if m.topic.endswith("/available") and m.json["status"] == "online"}


def got(kind: str, **fields: Any) -> Callable[[list[Received]], bool]:
    return lambda msgs: any(m.topic.endswith("/" + kind) and all(m.json.get(k) == v for k, v in fields.items())
                            for m in msgs)


@dataclass(frozen=True)
class MqttRun:
    prefix: str
    lines: list[Line]  # all the persistent subscriber received, start to stop
    retained: list[Line]  # what a subscriber joining mid-run found on available and state
    returncode: int
    stop_seconds: float  # SIGTERM to exit
    stderr: str


@pytest.fixture(scope="module")
def mqtt_run(mqtt_broker: Broker, video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttRun]:
    """The looping video against the broker: a broker outage mid-run, then SIGTERM."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    base = f"{prefix}/test-dev"
    logs = tmp_path_factory.mktemp("mqtt-run")
    if not mqtt_broker.running:  # an earlier outage test failed half-way
        mqtt_broker.start()
    sub = mqtt_broker.subscriber([f"{prefix}/#"], persistent=True)  # keeps what arrives while it is away
    subs = [sub]
    proc = daemon(mqtt_args(mqtt_broker, "--config", os.devnull, "--source", str(video)), mqtt_env(prefix), logs)
    try:
        assert sub.wait_for(got("expression", event="appeared"), WAIT_S), (logs / "stderr").read_text()
        assert sub.wait_for(got("stats"), WAIT_S)
        subs.append(late := mqtt_broker.subscriber([f"{base}/available", f"{base}/state"]))
        assert late.wait_for(lambda msgs: {m.topic for m in msgs} >= {f"{base}/available", f"{base}/state"}, WAIT_S)
        retained = from_broker(late.messages)
        mqtt_broker.stop()
        try:
            time.sleep(OUTAGE_S)
        finally:
            mqtt_broker.start()
        assert sub.wait_for(lambda msgs: len(online_seqs(msgs)) >= 2, WAIT_S + OUTAGE_S), "no reconnect"
        reconnected = max(online_seqs(sub.messages))
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/stats") and m.json["seq"] > reconnected
                                             for m in msgs), WAIT_S), "nothing after the reconnect"
        assert proc.poll() is None, "the daemon exited during the outage"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(RUN_TIMEOUT_S)
        stop_seconds = time.monotonic() - start
        sub.wait_for(got("available", status="stopped"), WAIT_S)
        yield MqttRun(prefix, from_broker(sub.messages), retained, returncode, stop_seconds,
                      (logs / "stderr").read_text())
    finally:
        end(proc)
        if not mqtt_broker.running:
            mqtt_broker.start()
        for s in subs:
            s.close()


def test_mqtt_run_publishes_every_topic_and_all_validates(mqtt_run):
    assert {line.kind for line in mqtt_run.lines} == {"available", "expression", "state", "stats"}
    for line in mqtt_run.lines:
        validate(line)
        assert line.topic.startswith(f"{mqtt_run.prefix}/test-dev/")
        assert_anonymous({"topic": line.topic, "payload": line.payload})
    assert statuses(mqtt_run.lines)[0] == "online"
    assert {e["event"] for e in events(mqtt_run.lines)} >= {"appeared", "gone"}
    assert all(e["label"] in STATE_LABELS for e in events(mqtt_run.lines))


def test_mqtt_availability_and_state_are_retained(mqtt_run):
    by_kind = {line.kind: line for line in mqtt_run.retained}
    assert by_kind["available"].retain and by_kind["available"].payload["status"] == "online"
    assert by_kind["state"].retain and by_kind["state"].payload["mode"] == "labels"
    for line in mqtt_run.retained:
        validate(line)


def test_broker_outage_loses_no_message_and_keeps_order(mqtt_run):
    seqs = first_arrivals(mqtt_run.lines)
    assert seqs == list(range(1, seqs[-1] + 1)), "a seq is missing or out of order"
    assert any(line.kind == "stats" and not line.payload["connected"] for line in mqtt_run.lines), \
        "nothing was published during the outage"
    assert [s for s in statuses(mqtt_run.lines) if s != "offline"][-1] == "stopped"


def test_sigterm_stops_cleanly_within_two_seconds(mqtt_run):
    assert mqtt_run.returncode == 0, mqtt_run.stderr
    assert mqtt_run.stop_seconds <= STOP_WITHIN_S
    last = [line for line in mqtt_run.lines if line.kind == "available"][-1]
    assert last.payload["status"] == "stopped"
    assert "Traceback" not in mqtt_run.stderr


@dataclass(frozen=True)
class HaRun:
    prefix: str
    ha_prefix: str
    discovery: list[Line]
    available: list[Line]  # what the availability subscriber saw, online then the will
    retained_after_kill: list[Line]


@pytest.fixture(scope="module")
def ha_kill_run(mqtt_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaRun]:
    """A config enabling Home Assistant discovery; the daemon is then killed with SIGKILL."""
    prefix, ha = f"t{uuid.uuid4().hex[:10]}", f"ha{uuid.uuid4().hex[:8]}"
    logs = tmp_path_factory.mktemp("ha-run")
    config = logs / "config.toml"
    config.write_text(f'[homeassistant]\ndiscovery = true\nprefix = "{ha}"\n')
    if not mqtt_broker.running:  # an earlier outage test failed half-way
        mqtt_broker.start()
    device = mqtt_broker.subscriber([f"{prefix}/test-dev/#"])
    proc = daemon(mqtt_args(mqtt_broker, "--config", str(config)), mqtt_env(prefix), logs)
    subs = [device]
    try:
        assert device.wait_for(lambda msgs: online_seqs(msgs), WAIT_S), (logs / "stderr").read_text()
        # Discovery is queued with "online"; a later seq shows the broker has it all.
        online = min(online_seqs(device.messages))
        assert device.wait_for(lambda msgs: any((m.json["seq"] or 0) > online for m in msgs), WAIT_S)
        subs.append(ha_sub := mqtt_broker.subscriber([f"{ha}/#"]))  # after the daemon: retained copies only
        ha_sub.wait_for(lambda msgs: len(msgs) >= 3, WAIT_S)
        time.sleep(0.3)  # so that a config too many would be seen too
        proc.kill()
        proc.wait(RUN_TIMEOUT_S)
        device.wait_for(got("available", status="offline"), WAIT_S)
        subs.append(late := mqtt_broker.subscriber([f"{prefix}/test-dev/available"]))
        late.wait_for(lambda msgs: len(msgs) >= 1, WAIT_S)
        available = [line for line in from_broker(device.messages) if line.kind == "available"]
        yield HaRun(prefix, ha, from_broker(ha_sub.messages), available, from_broker(late.messages))
    finally:
        end(proc)
        for sub in subs:
            sub.close()


def test_home_assistant_discovery_configs_are_retained(ha_kill_run):
    run = ha_kill_run
    ha = run.ha_prefix
    assert sorted(line.topic for line in run.discovery) == [f"{ha}/binary_sensor/test-dev/face_present/config",
                                                            f"{ha}/sensor/test-dev/expression/config",
                                                            f"{ha}/sensor/test-dev/faces/config"]
    for line in run.discovery:
        assert line.retain
        jsonschema.validate(line.payload, load_schema("discovery"), cls=jsonschema.Draft202012Validator)
        assert line.payload["state_topic"] == f"{run.prefix}/test-dev/state"
        assert line.payload["availability_topic"] == f"{run.prefix}/test-dev/available"


def test_kill_9_leaves_the_last_will_offline(ha_kill_run):
    assert statuses(ha_kill_run.available) == ["online", "offline"]
    will = ha_kill_run.available[-1]
    validate(will)
    assert will.payload["seq"] is None
    (retained,) = ha_kill_run.retained_after_kill
    assert retained.retain and retained.payload["status"] == "offline"


# --- configuration errors and check-config ----------------------------------------------------------

@dataclass(frozen=True)
class BadConfig:
    key: str  # the key path the first error line must name
    command: tuple[str, ...]
    toml: str = ""
    env: tuple[tuple[str, str], ...] = ()


BAD_CONFIGS = {
    "toml port out of range": BadConfig("mqtt.port", ("check-config",), toml="[mqtt]\nport = 70000\n"),
    "toml misspelt key": BadConfig("detector.score_treshold", ("run",), toml="[detector]\nscore_treshold = 0.5\n"),
    "toml TLS option without TLS": BadConfig("mqtt.tls_insecure", ("check-config",),
                                             toml="[mqtt]\ntls_insecure = true\n"),
    "toml section given as a value": BadConfig("source", ("run",), toml='source = "builtin:astronaut"\n'),
    "env not a number": BadConfig("tracker.max_missed_s", ("run",), env=(("EDGE_FER_TRACKER__MAX_MISSED_S", "soon"),)),
    "env unknown choice": BadConfig("privacy.mode", ("check-config",), env=(("EDGE_FER_PRIVACY__MODE", "faces"),)),
    "env password without user": BadConfig("mqtt.username", ("check-config",),
                                           env=(("EDGE_FER_MQTT__PASSWORD", SECRET),)),
    "flag device id with a slash": BadConfig("mqtt.device_id", ("run", "--device-id", "kitchen/cam")),
    "flag port zero": BadConfig("mqtt.port", ("check-config", "--mqtt-port", "0")),
    "flag empty source": BadConfig("source.uri", ("run", "--source", "")),
    "flag log level": BadConfig("service.log_level", ("run", "--log-level", "LOUD")),
}


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_names_the_key_and_exits_2(case: BadConfig, tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(case.toml)
    command, *rest = case.command
    result = edge_fer(command, "--config", str(config), *rest, env=cli_env(**dict(case.env)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert errors and all(e.startswith("config error: ") for e in errors), result.stderr
    assert re.match(rf"config error: {re.escape(case.key)}[ :]", errors[0]), errors[0]
    assert SECRET not in result.stderr


def test_check_config_prints_the_effective_config_with_the_password_redacted(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[mqtt]\nusername = "sensor"\n[tracker]\nmax_missed_s = 2.5\n')
    result = edge_fer("check-config", "--config", str(config), "--mqtt-host", "broker.lan",
                      env=cli_env(EDGE_FER_MQTT__PASSWORD=SECRET, EDGE_FER_PRIVACY__MODE="presence"))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and SECRET not in result.stderr
    dumped = tomllib.loads(result.stdout)  # the dump is TOML that loads again
    assert dumped["mqtt"]["password"] == "***"
    assert dumped["mqtt"]["username"] == "sensor" and dumped["mqtt"]["host"] == "broker.lan"
    assert dumped["tracker"]["max_missed_s"] == 2.5 and dumped["privacy"]["mode"] == "presence"
    assert dumped["source"]["uri"] == "builtin:astronaut"  # defaults are shown too


def test_a_camera_password_in_a_config_others_can_read_is_warned_about(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(f'[source]\nuri = "rtsp://admin:{SECRET}@192.0.2.7/stream1"\n')
    config.chmod(0o644)  # as install-service writes it
    result = edge_fer("check-config", "--config", str(config), env=cli_env())
    assert result.returncode == 0, result.stderr
    assert "every user of this machine can read it" in result.stderr and "edge-fer.source_uri" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    config.chmod(0o640)
    assert "can read it" not in edge_fer("check-config", "--config", str(config), env=cli_env()).stderr


def test_a_camera_slower_than_max_missed_s_is_not_a_lost_picture(tmp_path):
    """At 0.8 fps a frame comes every 1.25 s, longer than tracker.max_missed_s (1 s). The wait
    between two frames is not a stalled camera: the face is confirmed, and ends only at the stop."""
    result = edge_fer("run", "--max-frames", "5", env=cli_env(EDGE_FER_SOURCE__FPS="0.8"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    events = [m["payload"]["event"] for m in messages if m["topic"].endswith("/expression")]
    assert events == ["appeared", "gone"], events
    faces = [m["payload"]["faces"] for m in messages if m["topic"].endswith("/state")]
    assert faces == [1], faces  # the face; no "no face" before its confirmation, nor at the stop
    statuses = [m["payload"]["status"] for m in messages if m["topic"].endswith("/available")]
    assert statuses == ["online", "stopped"], statuses  # never no_picture, not even before the second frame


def test_a_reload_that_finds_the_default_config_gone_is_refused(tmp_path, monkeypatch):
    """The unit runs `edge-fer run` without --config: the default file, read at start, must not turn
    into built-in defaults (another camera, no broker) at a reload after it was deleted."""
    from edge_fer import cli, config
    from edge_fer.errors import ConfigError

    default = tmp_path / "config.toml"
    default.write_text('[source]\nuri = "picamera"\n')
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(default))
    args = cli._parser().parse_args(["run"])
    cli._pin_default_config(args)
    assert cli._load(args, apply_logging=False).source.uri == "picamera"
    default.unlink()
    with pytest.raises(ConfigError, match="config file .*config.toml: not found"):
        cli._load(args, apply_logging=False)


@pytest.mark.parametrize("source, says", [("ftp://camera/stream", "unsupported scheme 'ftp'"),
                                          ("missing.avi", "no such file")])
def test_a_source_no_restart_can_fix_exits_2_so_systemd_does_not_retry(source: str, says: str, tmp_path: Path):
    """The unit's RestartPreventExitStatus=2: a typo in the camera URL needs a human, not a restart loop."""
    result = edge_fer("run", "--config", os.devnull, "--source", source, cwd=tmp_path)
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_check_config_loads_the_model_so_a_bad_one_fails_before_the_service_starts(tmp_path: Path):
    """The unit's ExecStartPre and ExecReload: a model without its card must fail there, with exit 2."""
    model = tmp_path / "m.tflite"
    model.write_bytes(PACKAGED_MODEL.read_bytes())  # no card beside it
    result = edge_fer("check-config", "--config", os.devnull, cwd=tmp_path,
                      env=cli_env(EDGE_FER_CLASSIFIER__MODEL=str(model)))
    assert result.returncode == 2 and "model card" in result.stderr and "not found" in result.stderr, result.stderr


@pytest.mark.parametrize("device_id, warned", [("raspberrypi", True), ("kiosk-1", False)])
def test_a_factory_host_name_as_device_id_is_warned_about(device_id: str, warned: bool, tmp_path: Path):
    """Two Pis left as `raspberrypi` share topics and fight over one MQTT session, dropping each other."""
    with socket.socket() as s:  # a port nothing listens on: the run does not need the broker
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = edge_fer("run", "--config", os.devnull, "--max-frames", "3", cwd=tmp_path,
                      env=cli_env(EDGE_FER_MQTT__HOST="127.0.0.1", EDGE_FER_MQTT__PORT=str(port),
                                  EDGE_FER_MQTT__DEVICE_ID=device_id))
    assert result.returncode == 0, result.stderr
    assert ("a factory host name" in result.stderr) == warned, result.stderr
