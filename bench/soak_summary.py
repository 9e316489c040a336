"""The soak's measurements and what they say: per-bucket figures, the summary and its checks, the
printed report. bench/soak.py runs the daemon and fills these."""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from itertools import pairwise

from bench.common import print_table

FULL_SOAK_MINUTES = 30  # issue 5's soak


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
    inference_ms: float | None  # absent in aggregate privacy mode
    detect_ms: float
    buffered: int  # messages waiting for the broker
    buffer_dropped: int  # cumulative, lost from a full buffer
    cpu_s: float | None  # the daemon's CPU time when this arrived (None: it had exited)


LAUNCH = Stats(0.0, 0.0, 0, 0, 0.0, None, 0.0, 0, 0, 0.0)  # the counters before the first frame


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
    error: str  # empty when the run lasted its time


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 2) if values else None


def bucket(stats: list[Stats], samples: list[Sample], t0: float, t1: float, base: Stats | None) -> dict:
    """Figures of the stats that arrived in (t0, t1], counted from the last one before t0 (else
    ``base``, else the first inside); None where the bucket has too few stats or samples."""
    before = [s for s in stats if s.t <= t0]
    inside = [s for s in stats if t0 < s.t <= t1]
    mem = [s for s in samples if t0 < s.t <= t1]
    first = before[-1] if before else base or (inside[0] if inside else None)
    last = inside[-1] if inside else None
    rated = first is not None and last is not None and last.uptime_s > first.uptime_s
    frames = last.frames - first.frames if rated else None
    cpu = (1e3 * (last.cpu_s - first.cpu_s) / frames
           if rated and frames and last.cpu_s is not None and first.cpu_s is not None else None)
    return {
        "from_s": round(t0, 1), "to_s": round(t1, 1),
        "fps": round(frames / (last.uptime_s - first.uptime_s), 2) if rated else None,
        "frames": frames,
        "dropped_frames": last.dropped_frames - first.dropped_frames if rated else None,
        "cpu_ms_per_frame": round(cpu, 3) if cpu is not None else None,
        "detect_ms": _mean([s.detect_ms for s in inside]),
        "inference_ms": _mean([s.inference_ms for s in inside]),
        "buffered_max": max(s.buffered for s in inside) if inside else None,
        "rss_mb": round(statistics.median(s.rss_mb for s in mem), 2) if mem else None,
        "threads": max(s.threads for s in mem) if mem else None,
        "fds": max(s.fds for s in mem) if mem else None,
        "cpu_pct": (round(100 * (mem[-1].cpu_s - mem[0].cpu_s) / (mem[-1].t - mem[0].t), 1)
                    if len(mem) > 1 else None),
    }


def buckets(args: argparse.Namespace, run: Run) -> tuple[list[dict], dict]:
    """(the buckets after the warm-up, full ones and a last partial one, each with ``full``; the
    warm-up as one bucket, counted from the launch)."""
    size, end = args.bucket_minutes * 60, args.minutes * 60
    edges = [args.warmup_s]
    while edges[-1] < end - 1e-6:
        edges.append(min(edges[-1] + size, end))
    rows = [{**bucket(run.stats, run.samples, t0, t1, None), "full": t1 - t0 >= size - 1e-6}
            for t0, t1 in pairwise(edges)]
    return rows, bucket(run.stats, run.samples, 0.0, args.warmup_s, LAUNCH)


def slope_mb_per_hour(samples: list[Sample]) -> float | None:
    if len(samples) < 3:
        return None
    ts = [s.t for s in samples]
    rs = [s.rss_mb for s in samples]
    mt, mr = statistics.mean(ts), statistics.mean(rs)
    var = sum((t - mt) ** 2 for t in ts)
    return round(sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / var * 3600, 2) if var else None


def summarize(args: argparse.Namespace, run: Run, rows: list[dict]) -> dict:
    samples, stats = run.samples, run.stats
    end = samples[-1].t
    measured = [s for s in samples if s.t >= args.warmup_s]
    window = min(args.window_s, (args.minutes * 60 - args.warmup_s) / 4)
    start_rss = [s.rss_mb for s in measured if s.t <= args.warmup_s + window]
    end_rss = [s.rss_mb for s in measured if s.t >= end - window]
    rss_start = statistics.median(start_rss) if start_rss else None
    rss_end = statistics.median(end_rss) if end_rss else None
    growth = rss_end - rss_start if start_rss and end_rss else None
    full = [r for r in rows if r["full"]]
    fps_first, fps_last = full[0]["fps"], full[-1]["fps"]
    decay = round((fps_first - fps_last) / fps_first, 4) if fps_first and fps_last is not None else None
    cpu_first, cpu_last = full[0]["cpu_ms_per_frame"], full[-1]["cpu_ms_per_frame"]
    cpu_change = round((cpu_last - cpu_first) / cpu_first, 4) if cpu_first and cpu_last is not None else None
    buffer_dropped = stats[-1].buffer_dropped if stats else None
    return {
        "short_run": args.minutes < FULL_SOAK_MINUTES,
        "minutes": args.minutes,
        "camera_fps": args.fps,
        "sink": "mqtt" if args.mqtt else "stdout",
        "rss_start_mb": round(rss_start, 2) if rss_start is not None else None,
        "rss_end_mb": round(rss_end, 2) if rss_end is not None else None,
        "rss_growth_mb": round(growth, 2) if growth is not None else None,
        "rss_slope_mb_per_hour": slope_mb_per_hour(measured),
        "rss_peak_mb": round(max(s.hwm_mb for s in samples), 2),
        "rss_window_s": round(window, 1),
        "threads_start_end": [measured[0].threads, measured[-1].threads] if measured else None,
        "fds_start_end": [measured[0].fds, measured[-1].fds] if measured else None,
        "fps_first_bucket": fps_first,
        "fps_last_bucket": fps_last,
        "fps_decay": decay,
        "cpu_ms_per_frame_first_bucket": cpu_first,
        "cpu_ms_per_frame_last_bucket": cpu_last,
        "cpu_ms_per_frame_growth": cpu_change,
        "frames": stats[-1].frames if stats else 0,
        "dropped_frames": stats[-1].dropped_frames if stats else 0,
        "buffer_dropped": buffer_dropped,
        "interpreter": run.interpreter,
        "exit_code": run.exit_code,
        "sigterm_to_exit_s": round(run.stop_s, 3),
        "pass_rss": growth is not None and growth < args.max_growth_mb,
        "pass_fps": decay is not None and decay <= args.max_fps_decay,
        "pass_cpu": cpu_change is not None and cpu_change <= args.max_cpu_growth,
        "pass_sink": buffer_dropped == 0,
    }


def _cell(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def print_report(args: argparse.Namespace, run: Run, summary: dict, rows: list[dict], warm: dict) -> None:
    kind = (f"SHORT RUN ({args.minutes:g} min), not the {FULL_SOAK_MINUTES}-min soak" if summary["short_run"]
            else f"{args.minutes:g}-min soak")
    print(f"\n{kind}, sink {summary['sink']}; load average before/after {run.machine_before['loadavg']} / "
          f"{run.machine_after['loadavg']}")
    print_table([{
        "bucket": "warm-up" if row is warm else f"{row['from_s']:.0f}-{row['to_s']:.0f} s"
                  + ("" if row["full"] else " (part)"),
        "fps": _cell(row["fps"], ".2f"), "frames": _cell(row["frames"], "d"),
        "dropped": _cell(row["dropped_frames"], "d"), "CPU ms/frame": _cell(row["cpu_ms_per_frame"], ".2f"),
        "det ms": _cell(row["detect_ms"], ".2f"), "cls ms": _cell(row["inference_ms"], ".2f"),
        "RSS MB": _cell(row["rss_mb"], ".1f"), "thr": _cell(row["threads"], "d"), "fds": _cell(row["fds"], "d"),
        "CPU %": _cell(row["cpu_pct"], ".1f"), "buffered": _cell(row["buffered_max"], "d"),
    } for row in [warm, *rows]])
    verdict = {True: "PASS", False: "FAIL"}
    s = summary
    print(f"RSS start {_cell(s['rss_start_mb'], '.1f')} MB, end {_cell(s['rss_end_mb'], '.1f')} MB "
          f"(medians over {s['rss_window_s']:.0f} s): growth {_cell(s['rss_growth_mb'], '+.2f')} MB "
          f"(target < {args.max_growth_mb:g}: {verdict[s['pass_rss']]}); "
          f"slope {s['rss_slope_mb_per_hour']} MB/h; peak {s['rss_peak_mb']:.1f} MB")
    print(f"first vs last full bucket: fps {_cell(s['fps_first_bucket'], '.2f')} -> "
          f"{_cell(s['fps_last_bucket'], '.2f')}, "
          f"decay {_cell(s['fps_decay'], '.1%')} (target <= {args.max_fps_decay:.0%}: {verdict[s['pass_fps']]}); "
          f"CPU ms/frame {_cell(s['cpu_ms_per_frame_first_bucket'], '.2f')} -> "
          f"{_cell(s['cpu_ms_per_frame_last_bucket'], '.2f')}, growth {_cell(s['cpu_ms_per_frame_growth'], '+.1%')} "
          f"(target <= {args.max_cpu_growth:.0%}: {verdict[s['pass_cpu']]})")
    print(f"messages dropped by the sink's buffer: {s['buffer_dropped']} ({verdict[s['pass_sink']]}); "
          f"exit {run.exit_code} {run.stop_s:.2f} s after SIGTERM")
