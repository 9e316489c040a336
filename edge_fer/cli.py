"""``edge-fer``: run the daemon, classify photos, check the config, install the service."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_fer import __version__
from edge_fer.errors import ConfigError, EdgeFerError, ModelError, PublishError, SourceError, SourceUnavailable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
"""2: bad config, model or TLS file, which a restart cannot fix (the unit's RestartPreventExitStatus=2).
1: anything a restart may fix (camera not there yet, pipeline failure mid-run)."""

log = logging.getLogger("edge_fer")


def _overrides(args) -> dict:
    """The flags a subcommand has (``classify`` has no source or broker) over the config."""
    pairs = {"source.uri": "source", "mqtt.host": "mqtt_host", "mqtt.port": "mqtt_port",
             "mqtt.device_id": "device_id", "service.log_level": "log_level"}
    return {key: getattr(args, flag) for key, flag in pairs.items() if getattr(args, flag, None) is not None}


def _no_limit_or_more(kind: type):
    """argparse type for --max-frames/--duration: 0 is "no limit", a negative value is a mistake
    (often meant as "no limit"), not a limit already reached."""
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative; give 0 for no limit, or a positive limit")
        if value != value or value == float("inf"):  # nan compares false with every limit: a run that never ends
            raise argparse.ArgumentTypeError(f"{text} is not a number of seconds; give 0 for no limit")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def _images(paths: list[str]) -> list[str]:
    """The photos to classify: files as given, a folder's images in name order (as ``run`` plays them)."""
    from edge_fer.capture.opencv import IMAGE_SUFFIXES

    out = []
    for path in map(Path, paths):
        if path.is_dir():
            out += [str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(str(path))
    return out


def _load(args, apply_logging: bool = True):
    """``apply_logging=False`` for a reload: the daemon applies the level only if it accepts the config."""
    import os

    from edge_fer.config import load_config, readable_camera_password
    from edge_fer.logsetup import setup_logging

    cfg = load_config(args.config, _overrides(args), os.environ)
    if apply_logging:
        setup_logging(cfg.service.log_level)  # validated: service.log_level, or --log-level over it
        if warning := readable_camera_password(args.config, cfg):
            log.warning("%s", warning)
    return cfg


def cmd_check_config(args) -> int:
    from edge_fer.config import dump_config
    from edge_fer.publish import build_sink

    from edge_fer.service import build_pipeline

    cfg = _load(args)
    build_pipeline(cfg)  # loads the model, its card and the detector: a bad one fails here, as ExecStartPre/ExecReload
    build_sink(cfg)  # loads the TLS files, connects to nothing
    print(dump_config(cfg))
    return EXIT_OK


def _pin_default_config(args) -> None:
    """Without --config, the default file is read if it exists. Name it once it was there at start:
    a reload that finds it gone must be refused, not fall back to the built-in defaults (another
    camera, no broker)."""
    from edge_fer import config

    if args.config is None and Path(config.DEFAULT_CONFIG_PATH).is_file():
        args.config = config.DEFAULT_CONFIG_PATH


def cmd_run(args) -> int:
    from edge_fer.service import Daemon, RunLimits

    _pin_default_config(args)
    cfg = _load(args)
    limits = RunLimits(args.max_frames, args.duration)
    return Daemon(cfg, limits, reload=lambda: _load(args, apply_logging=False)).run()


def cmd_classify(args) -> int:
    import cv2

    from edge_fer.capture.opencv import IMAGE_SUFFIXES
    from edge_fer.service import build_pipeline

    pipeline = build_pipeline(_load(args))  # the daemon's detector and classifier, same config
    detector, classifier = pipeline.detector, pipeline.classifier
    status = EXIT_OK
    images = _images(args.images)
    if not images:
        print(f"error: no images in {', '.join(args.images)} (looked for {', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
        return EXIT_FAILURE
    for path in images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            print(f"error: cannot read image {path}: missing, unreadable or not an image format OpenCV knows",
                  file=sys.stderr)
            status = EXIT_FAILURE
            continue
        faces = detector.detect(image)
        records = []
        for face, expression in zip(faces, classifier.classify_still(image, faces)):
            label, confidence = expression.top(classifier.card.labels)
            records.append({"box": [round(v) for v in face.box], "label": label, "confidence": round(confidence, 4),
                            "scores": {name: round(float(p), 4)
                                       for name, p in zip(classifier.card.labels, expression.probabilities)}})
        if args.json:
            print(json.dumps({"image": path, "faces": records}))
        else:
            summary = ", ".join(f"{r['label']} {r['confidence']:.2f} at {r['box']}" for r in records) or "no face"
            print(f"{path}: {summary}")
    return status


def cmd_install_service(args) -> int:
    from edge_fer.install import install_service

    return install_service(root=Path(args.root), config_source=None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-fer", description="On-device facial expression recognition: "
                                     "publishes only anonymized labels.")
    parser.add_argument("--version", action="version", version=f"edge-fer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser, daemon: bool = True) -> argparse.ArgumentParser:
        p.add_argument("--config", default=None, help="TOML config (default /etc/edge-fer/config.toml if present)")
        if daemon:
            p.add_argument("--source", help="camera/file/stream: picamera, 0, /dev/video0, video.mp4, rtsp://..., "
                                            "photo.jpg, a folder, builtin:astronaut")
            p.add_argument("--mqtt-host", help="broker host; unset = JSON lines on stdout")
            p.add_argument("--mqtt-port", type=int)
            p.add_argument("--device-id", help="MQTT-safe device id (default: hostname)")
        p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (overrides service.log_level)")
        return p

    p = with_config(sub.add_parser("run", help="run the pipeline (the daemon)"))
    p.add_argument("--max-frames", type=_no_limit_or_more(int), default=0,
                   help="stop after this many frames (0 = no limit)")
    p.add_argument("--duration", type=_no_limit_or_more(float), default=0.0,
                   help="stop after this many seconds (0 = no limit)")
    p.set_defaults(run=cmd_run)

    p = with_config(sub.add_parser("classify", help="detect and classify faces in photos (local tool; prints boxes)"),
                    daemon=False)
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.set_defaults(run=cmd_classify)

    p = with_config(sub.add_parser("check-config", help="validate and print the effective config (secrets redacted)"))
    p.set_defaults(run=cmd_check_config)

    p = sub.add_parser("install-service", help="install the systemd unit and a default config (the unit runs as a DynamicUser)")
    p.add_argument("--root", default="/", help="install below this root (packaging, tests)")
    p.set_defaults(run=cmd_install_service)
    return parser


def _fatal(text: str) -> None:
    """The line that says why the process ends; in the journal at error priority (``<3>``), or
    ``journalctl -p err`` would miss the one line that explains a failed start."""
    from edge_fer.logsetup import stderr_is_journal, syslog_priority

    print((f"<{syslog_priority(logging.ERROR)}>" if stderr_is_journal() else "") + text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from edge_fer.logsetup import setup_logging

    setup_logging("INFO")  # until the config is read
    try:
        return args.run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _fatal(f"config error: {problem}")
        return EXIT_USAGE
    except (ModelError, PublishError) as exc:  # a bad model or TLS file: a restart cannot fix it
        _fatal(f"error: {exc}")
        return EXIT_USAGE
    except SourceUnavailable as exc:  # a camera absent at start may appear: let systemd retry
        _fatal(f"error: {exc}")
        return EXIT_FAILURE
    except SourceError as exc:  # a malformed source, a missing file, no picamera2: a restart cannot fix it
        _fatal(f"error: {exc}")
        return EXIT_USAGE
    except EdgeFerError as exc:
        _fatal(f"error: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
