"""Soak: the real daemon for a long time on a looping camera-rate video; does memory grow, does fps decay?

    python bench/soak.py                                  # 30 min at 15 fps; bench/results/soak.json
    python bench/soak.py --minutes 3 --warmup-s 30 --bucket-minutes 0.5   # a quick check

``edge-fer run`` runs as a subprocess exactly as systemd would start it (a config file, JSON lines on
stdout, stats every ``--stats-s``). The source is a looping MJPG video made from bench/frames.py's
moving astronaut head, paced at ``--fps`` like a camera; the last fifth of each loop has no face,
so tracks end and new ones start every loop (the churn that would leak per-track state).

Sampled every ``--sample-s`` from /proc/PID: VmRSS, Threads, open fds and CPU time. Read from the
daemon's stats messages: its own fps, frames, dropped frames and stage times. Reported: RSS at the
start (median over the first ``--window-s`` after the warm-up) and at the end (median over the last
``--window-s``), their difference, the least-squares RSS slope, and fps per bucket. Targets: RSS
growth < ``--max-growth-mb`` (5 MB) and the last bucket's fps at least (1 - ``--max-fps-decay``)
of the first's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from bench.frames import render  # noqa: E402

FULL_SOAK_MINUTES = 30
FACE_FRACTION = 0.8  # of each loop; the rest is empty so tracks end and restart
KB_MB = 1 / 1024  # /proc/PID/status gives kB
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the daemon was launched
    rss_mb: float
    hwm_mb: float
    threads: int
    fds: int
    cpu_s: float  # user + system, all threads


@dataclass(frozen=True)
class Stats:
    t: float  # arrival, seconds since launch
    fps: float
    frames: int  # cumulative
    dropped_frames: int  # cumulative
    uptime_s: float
    inference_ms: float
    detect_ms: float


LAUNCH = Stats(0.0, 0.0, 0, 0, 0.0, 0.0, 0.0)  # the counters before the first frame


def write_clip(path: Path, seconds: float, fps: float, width: int, height: int) -> Path:
    frames = max(2, round(seconds * fps))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write MJPG video to {path}")
    with_face = round(frames * FACE_FRACTION)
    for i in range(frames):
        writer.write(render(width, height, 1 if i < with_face else 0, i, with_face))
    writer.release()
    return path


def read_sample(pid: int, t: float) -> Sample | None:
    proc = Path(f"/proc/{pid}")
    try:
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        fds = len(os.listdir(proc / "fd"))
    except (OSError, ValueError):
        return None  # the process is gone
    ticks = os.sysconf("SC_CLK_TCK")
    return Sample(round(t, 2), int(status["VmRSS"].split()[0]) * KB_MB, int(status["VmHWM"].split()[0]) * KB_MB,
                  int(status["Threads"]), fds, (int(stat[11]) + int(stat[12])) / ticks)


class Daemon:
    """``edge-fer run`` with its stdout stats collected by a thread and its stderr in a file."""

    def __init__(self, config: Path, workdir: Path, model: str | None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_FER_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        if model:
            env["EDGE_FER_CLASSIFIER__MODEL"] = model
        self.log_path = workdir / "daemon.log"
        self._log = self.log_path.open("w")
        self.launched = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_fer.cli", "run", "--config", str(config)],
                                     cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        self.stats: list[Stats] = []
        self.first_message_t: float | None = None
        self.interpreter = ""
        self.messages = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def now(self) -> float:
        return time.monotonic() - self.launched

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.messages += 1
            if self.first_message_t is None:
                self.first_message_t = self.now()
            if message["topic"].endswith("/stats"):
                p = message["payload"]
                self.interpreter = p["interpreter"]
                self.stats.append(Stats(round(self.now(), 2), p["fps"], p["frames"], p["dropped_frames"],
                                        p["uptime_s"], p["inference_ms"], p["detect_ms"]))

    def stop(self) -> tuple[int, float]:
        sent = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        elapsed = time.monotonic() - sent
        self._reader.join(5.0)
        self._log.close()
        return rc, elapsed

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def fps_between(a: Stats, b: Stats) -> float:
    return (b.frames - a.frames) / max(b.uptime_s - a.uptime_s, 1e-6)


def buckets(stats: list[Stats], samples: list[Sample], start: float, end: float, size: float) -> list[dict]:
    """Per bucket of ``size`` s from ``start``: fps from the cumulative frame counts, stage times, RSS."""
    rows = []
    t0 = start
    while t0 < end - 1e-6:
        t1 = min(t0 + size, end)
        before = [s for s in stats if s.t <= t0]
        inside = [s for s in stats if t0 < s.t <= t1]
        mem = [s for s in samples if t0 < s.t <= t1]
        if inside:
            first = before[-1] if before else LAUNCH  # no stats before: count from the start
            last = inside[-1]
            rows.append({
                "from_s": round(t0, 1), "to_s": round(t1, 1),
                "fps": round(fps_between(first, last), 2),
                "frames": last.frames - first.frames,
                "dropped_frames": last.dropped_frames - first.dropped_frames,
                "detect_ms": round(statistics.mean(s.detect_ms for s in inside), 2),
                "inference_ms": round(statistics.mean(s.inference_ms for s in inside), 2),
                "rss_mb": round(statistics.median(s.rss_mb for s in mem), 2) if mem else None,
                "threads": max(s.threads for s in mem) if mem else None,
                "fds": max(s.fds for s in mem) if mem else None,
                "cpu_pct": (round(100 * (mem[-1].cpu_s - mem[0].cpu_s) / max(mem[-1].t - mem[0].t, 1e-6), 1)
                            if len(mem) > 1 else None),
            })
        t0 = t1
    return rows


def slope_mb_per_hour(samples: list[Sample]) -> float | None:
    if len(samples) < 3:
        return None
    ts = [s.t for s in samples]
    rs = [s.rss_mb for s in samples]
    mt, mr = statistics.mean(ts), statistics.mean(rs)
    var = sum((t - mt) ** 2 for t in ts)
    return round(sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / var * 3600, 2) if var else None


def machine() -> dict:
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        load = []
    return {"host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg": load}


@dataclass
class Run:
    samples: list[Sample]
    stats: list[Stats]
    interpreter: str
    exit_code: int
    stop_s: float  # SIGTERM to exit
    log_tail: str
    machine_before: dict
    machine_after: dict


def soak(args: argparse.Namespace) -> Run:
    """Write the clip and config, run the daemon for ``args.minutes``, sample it, stop it."""
    total_s = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="edge-fer-soak-") as tmp:
        work = Path(tmp)
        clip = write_clip(work / "camera.avi", args.clip_s, args.fps, args.width, args.height)
        config = work / "config.toml"
        config.write_text(f'[source]\nuri = "{clip}"\nfps = {args.fps}\nloop = true\n'
                          f'width = {args.width}\nheight = {args.height}\n'
                          f'[mqtt]\ndevice_id = "soak"\nstats_interval_s = {args.stats_s}\n')
        before = machine()
        daemon = Daemon(config, work, args.model)
        samples: list[Sample] = []
        print(f"soak: {args.minutes:g} min at {args.fps:g} fps, {args.width}x{args.height}, "
              f"pid {daemon.proc.pid}; warm-up {args.warmup_s:g} s", flush=True)
        next_sample, per_minute = 0.0, max(1, round(60 / args.sample_s))
        while (t := daemon.now()) < total_s:
            if daemon.proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({daemon.proc.returncode}) after {t:.0f} s:\n{daemon.log_tail()}")
            if daemon.first_message_t is None and t > START_TIMEOUT_S:
                daemon.stop()
                raise SystemExit(f"no output within {START_TIMEOUT_S:g} s:\n{daemon.log_tail()}")
            if t >= next_sample:
                next_sample += args.sample_s
                if sample := read_sample(daemon.proc.pid, t):
                    samples.append(sample)
                    if len(samples) % per_minute == 0:
                        fps = daemon.stats[-1].fps if daemon.stats else float("nan")
                        print(f"  {t:6.0f} s  RSS {sample.rss_mb:6.1f} MB  threads {sample.threads}  "
                              f"fds {sample.fds}  fps {fps:5.2f}", flush=True)
            time.sleep(0.2)
        rc, stop_s = daemon.stop()
        return Run(samples, daemon.stats, daemon.interpreter, rc, stop_s, daemon.log_tail(), before, machine())


def summarize(args: argparse.Namespace, run: Run) -> tuple[dict, list[dict], list[dict]]:
    """(summary, buckets after the warm-up, the warm-up as one bucket)."""
    samples, stats = run.samples, run.stats
    end = samples[-1].t
    measured = [s for s in samples if s.t >= args.warmup_s]
    window = min(args.window_s, (end - args.warmup_s) / 4)
    rss_start = statistics.median(s.rss_mb for s in measured if s.t <= args.warmup_s + window)
    rss_end = statistics.median(s.rss_mb for s in measured if s.t >= end - window)
    rows = buckets(stats, samples, args.warmup_s, end, args.bucket_minutes * 60)
    warm = buckets(stats, samples, 0.0, args.warmup_s, args.warmup_s)
    fps_first, fps_last = rows[0]["fps"], rows[-1]["fps"]
    growth = rss_end - rss_start
    decay = (fps_first - fps_last) / fps_first if fps_first else None
    summary = {
        "short_run": args.minutes < FULL_SOAK_MINUTES,
        "minutes": args.minutes,
        "camera_fps": args.fps,
        "rss_start_mb": round(rss_start, 2),
        "rss_end_mb": round(rss_end, 2),
        "rss_growth_mb": round(growth, 2),
        "rss_slope_mb_per_hour": slope_mb_per_hour(measured),
        "rss_peak_mb": round(max(s.hwm_mb for s in samples), 2),
        "rss_window_s": round(window, 1),
        "threads_start_end": [measured[0].threads, measured[-1].threads],
        "fds_start_end": [measured[0].fds, measured[-1].fds],
        "fps_first_bucket": fps_first,
        "fps_last_bucket": fps_last,
        "fps_decay": round(decay, 4) if decay is not None else None,
        "frames": stats[-1].frames if stats else 0,
        "dropped_frames": stats[-1].dropped_frames if stats else 0,
        "interpreter": run.interpreter,
        "exit_code": run.exit_code,
        "sigterm_to_exit_s": round(run.stop_s, 3),
        "pass_rss": growth < args.max_growth_mb,
        "pass_fps": decay is not None and decay <= args.max_fps_decay,
    }
    return summary, rows, warm


def _cell(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else format(float("nan"), fmt)


def print_report(args: argparse.Namespace, run: Run, summary: dict, rows: list[dict], warm: list[dict]) -> None:
    kind = (f"SHORT RUN ({args.minutes:g} min), not the {FULL_SOAK_MINUTES}-min soak" if summary["short_run"]
            else f"{args.minutes:g}-min soak")
    print(f"\n{kind}; load average before/after {run.machine_before['loadavg']} / {run.machine_after['loadavg']}")
    print(f"{'bucket':>15} {'fps':>6} {'frames':>7} {'dropped':>7} {'det ms':>6} {'cls ms':>6} "
          f"{'RSS MB':>7} {'thr':>4} {'fds':>4} {'CPU %':>6}")
    for warming, row in [(True, r) for r in warm] + [(False, r) for r in rows]:
        name = "warm-up" if warming else f"{row['from_s']:.0f}-{row['to_s']:.0f} s"
        print(f"{name:>15} {row['fps']:6.2f} {row['frames']:7d} {row['dropped_frames']:7d} {row['detect_ms']:6.2f} "
              f"{row['inference_ms']:6.2f} {_cell(row['rss_mb'], '7.1f')} {_cell(row['threads'], '4.0f')} "
              f"{_cell(row['fds'], '4.0f')} {_cell(row['cpu_pct'], '6.1f')}")
    verdict = {True: "PASS", False: "FAIL"}
    print(f"RSS start {summary['rss_start_mb']:.1f} MB, end {summary['rss_end_mb']:.1f} MB "
          f"(medians over {summary['rss_window_s']:.0f} s): growth {summary['rss_growth_mb']:+.2f} MB "
          f"(target < {args.max_growth_mb:g}: {verdict[summary['pass_rss']]}); "
          f"slope {summary['rss_slope_mb_per_hour']} MB/h; peak {summary['rss_peak_mb']:.1f} MB")
    print(f"fps first bucket {summary['fps_first_bucket']:.2f}, last {summary['fps_last_bucket']:.2f}: "
          f"decay {100 * (summary['fps_decay'] or 0):.1f} % (target <= {100 * args.max_fps_decay:g} %: "
          f"{verdict[summary['pass_fps']]}); exit {run.exit_code} {run.stop_s:.2f} s after SIGTERM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=FULL_SOAK_MINUTES,
                        help=f"total run time, warm-up included (default {FULL_SOAK_MINUTES})")
    parser.add_argument("--fps", type=float, default=15.0, choices=(15.0, 30.0), help="camera rate (default 15)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--clip-s", type=float, default=10.0, help="length of the looping video (default 10)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of start RSS and buckets (default 60)")
    parser.add_argument("--window-s", type=float, default=60.0,
                        help="start/end RSS = median over this long after warm-up / before the end (default 60)")
    parser.add_argument("--bucket-minutes", type=float, default=5.0, help="fps bucket size (default 5)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between /proc samples (default 5)")
    parser.add_argument("--stats-s", type=float, default=10.0, help="the daemon's mqtt.stats_interval_s (default 10)")
    parser.add_argument("--model", default=None, help="classifier .tflite (card beside it); default: the packaged one")
    parser.add_argument("--max-growth-mb", type=float, default=5.0)
    parser.add_argument("--max-fps-decay", type=float, default=0.05,
                        help="allowed fractional fps drop, last bucket vs first (default 0.05)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    if args.warmup_s + 2 * args.sample_s >= args.minutes * 60:
        parser.error("--minutes must leave time after --warmup-s")

    run = soak(args)
    summary, rows, warm = summarize(args, run)
    print_report(args, run, summary, rows, warm)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "summary": summary, "args": vars(args), "machine_before": run.machine_before,
        "machine_after": run.machine_after, "buckets": rows, "warmup": warm,
        "samples": [asdict(s) for s in run.samples], "stats": [asdict(s) for s in run.stats],
        "daemon_log_tail": run.log_tail,
    }, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if summary["pass_rss"] and summary["pass_fps"] and run.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
