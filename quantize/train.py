"""Train the expression CNN on FER2013 + FER+ Training, keep the epoch best on PublicTest.

Targets: FER+'s sharp Training faces, each with the mean of its FER+ vote distribution and its
FER2013 label (smoothed, carried over by quantize.match), so the one model answers to both ground
truths the model card reports.
Augmentation mimics what a live camera crop adds to a dataset face: shift, scale, rotation,
mirror, lighting, focus blur.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantize.data import LABELS, Split, load_fer2013, load_ferplus
from quantize.match import SHARP_FLOOR, match_labels, sharpness
from quantize.model import BASE_WIDTH, build_classifier, load_keras
from quantize.provenance import code_revision, provenance, read_record

LABEL_SMOOTHING = 0.1
"""For FER2013's single labels only; FER+ votes are already soft."""
AUG_SHIFT = 0.10  # fraction of the side: detector boxes drift by about this much frame to frame
AUG_ZOOM = 0.15  # detector box size error
AUG_ROTATION_DEG = 15.0  # residual roll after eye-line alignment
AUG_CONTRAST = 0.4
AUG_BRIGHTNESS = 0.25  # fraction of the 0..255 range
AUG_BLUR_PROB = 0.25  # motion / focus blur on a webcam or car camera
WARMUP_EPOCHS = 1
WEIGHT_DECAY = 5e-4
KD_WEIGHT = 0.5
"""With --teacher, the share of each target taken from the teacher's probabilities; the rest stays
the label target. Hinton et al. 2015 (distillation) mix a soft and a hard term; half each here."""
AUGMENTATIONS = ("camera", "mirror")
"""--augment: "camera" is _augmenter's full set. "mirror" only flips: measured on train3, the camera
set leaves the net underfitting its own Training faces (cross-entropy 0.96 against the targets'
entropy 0.67, Training accuracy only 1.7 pt over PublicTest). What a short stage without it gives
and costs is in quantize/reports/tried/README.md."""
CHECKPOINT = "last-{epoch:03d}.keras"
"""Written after every epoch with the optimizer's state, so ``--resume`` continues the same schedule.
train.json names the current one; the one before is deleted only after train.json moved on, so a
run killed at any instant resumes from a checkpoint and a history that belong together."""
RESUMABLE_CHANGES = {"time_budget_min", "resume", "overwrite"}
"""The only settings a resumed run may change; any other would make it a different run."""


@dataclass
class TrainConfig:
    data: str
    out: str
    epochs: int = 44
    batch: int = 128
    lr: float = 2e-3
    seed: int = 1234
    time_budget_min: float = 0.0  # 0 = no budget
    limit: int = 0  # use only this many training faces (tests, smoke runs)
    init: str = ""  # start from this saved model (a second, low-rate stage) instead of random weights
    resume: bool = False  # continue the run in ``out`` from its last finished epoch
    overwrite: bool = False  # start afresh in an ``out`` that holds a run (a forgotten --resume must not)
    teacher: list[str] = field(default_factory=list)  # .keras models whose averaged output mixes into the targets
    # "matched": FER+'s sharp images, targets = mean of FER+ votes and the FER2013 label matched to
    # the same face. "as-given": both archives' Training images as two views (FER2013's are blurred).
    # "none": FER+'s vote distributions alone (its paper's "probability" scheme), FER2013 unused.
    # "only": the matched FER2013 labels alone (smoothed), FER+'s votes unused: the other end of the
    # trade-off between the two label sets, to measure how far FER2013 accuracy goes on its own.
    fer2013_labels: str = "matched"
    base_width: int = BASE_WIDTH
    augment: str = AUGMENTATIONS[0]


def _targets(split: Split) -> np.ndarray:
    if split.source == "fer2013":
        return split.targets * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / len(LABELS)
    return split.targets


def _epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch's shuffle and augmentation depend only on (seed, epoch), so a resumed run sees
    the same batches as one that never stopped."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def _augmenter(seed: int):
    import keras
    import tensorflow as tf
    from keras import layers

    geometric = keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(AUG_SHIFT, AUG_SHIFT, fill_mode="reflect", seed=seed + 1),
        layers.RandomRotation(AUG_ROTATION_DEG / 360, fill_mode="reflect", seed=seed + 2),
        layers.RandomZoom(AUG_ZOOM, AUG_ZOOM, fill_mode="reflect", seed=seed + 3),
    ])
    blur_kernel = tf.constant(np.outer(*[np.array([1, 2, 1], np.float32) / 4] * 2)[:, :, None, None])
    gen = tf.random.Generator.from_seed(seed + 4)

    def augment(x, y):
        x = geometric(x, training=True)
        n = tf.shape(x)[0]
        blurred = tf.nn.conv2d(x, blur_kernel, 1, "SAME")
        use_blur = gen.uniform([n, 1, 1, 1]) < AUG_BLUR_PROB
        x = tf.where(use_blur, blurred, x)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        contrast = gen.uniform([n, 1, 1, 1], 1 - AUG_CONTRAST, 1 + AUG_CONTRAST)
        bright = gen.uniform([n, 1, 1, 1], -AUG_BRIGHTNESS, AUG_BRIGHTNESS) * 255
        x = tf.clip_by_value((x - mean) * contrast + mean + bright, 0, 255)
        return x, y

    return augment


def _training_set(cfg: TrainConfig, log) -> tuple[np.ndarray, np.ndarray]:
    fer, plus = load_fer2013(cfg.data, "Training"), load_ferplus(cfg.data, "Training")
    log(f"sharpness (median Laplacian variance): FER2013 Training {sharpness(fer.images):.1f}, "
        f"FER+ Training {sharpness(plus.images):.1f}; blurred below {SHARP_FLOOR}")
    if cfg.fer2013_labels == "as-given":
        return np.concatenate([fer.images, plus.images]), np.concatenate([_targets(fer), _targets(plus)]).astype(np.float32)
    if cfg.fer2013_labels == "none":
        return plus.images, plus.targets.astype(np.float32)
    matched = match_labels(fer, plus)
    sure = matched >= 0
    onehot = np.eye(len(LABELS), dtype=np.float32)[np.where(sure, matched, 0)]
    smoothed = onehot * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / len(LABELS)
    if cfg.fer2013_labels == "only":
        log(f"FER2013 labels matched to {int(sure.sum())} of {len(plus.images)} sharp FER+ Training faces; "
            "training on those alone")
        return plus.images[sure], smoothed[sure]
    targets = np.where(sure[:, None], (plus.targets + smoothed) / 2, plus.targets).astype(np.float32)
    log(f"FER2013 labels matched to {int(sure.sum())} of {len(plus.images)} sharp FER+ Training faces; "
        f"their FER+ majority agrees with the FER2013 label on {float((plus.labels[sure] == matched[sure]).mean()):.3f}")
    return plus.images, targets


def accuracy(model, split: Split, batch: int = 512) -> float:
    probs = model.predict(split.images[..., None].astype(np.float32), batch_size=batch, verbose=0)
    return float((probs.argmax(axis=1) == split.labels).mean())


def teacher_probs(paths: list[str], images: np.ndarray, batch: int = 512) -> np.ndarray:
    """The teachers' probabilities averaged over models and over each face and its mirror, so the
    soft target does not depend on which way the augmentation flips the face."""
    import keras

    x = images[..., None].astype(np.float32)
    total = np.zeros((len(images), len(LABELS)), np.float32)
    for path in paths:
        model = load_keras(path, compile=False)
        for view in (x, x[:, :, ::-1]):
            total += model.predict(view, batch_size=batch, verbose=0)
    return total / (2 * len(paths))


def _inputs(cfg: TrainConfig, out: Path) -> dict:
    """Path and sha256 of every file the run reads: the two archives, ``--init``, each ``--teacher``.
    A model the run reads may not live in its own ``--out``: the run would overwrite it."""
    models = {"init": cfg.init} if cfg.init else {}
    models.update({f"teacher{i}": t for i, t in enumerate(cfg.teacher, 1)})
    for name, path in models.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{name.rstrip('0123456789')} {path} not found: give a .keras model "
                                    "that `python -m quantize train` wrote")
        if Path(path).resolve().parent == out.resolve():
            raise ValueError(f"--{name.rstrip('0123456789')} {path} is inside --out {out}, which this run "
                             "overwrites: give the run its own --out")
        load_keras(path, compile=False)  # now, not after the data is loaded
    return provenance(cfg.data, **models)["inputs"]


def _resume_state(cfg: TrainConfig, out: Path, inputs: dict) -> dict | None:
    """The interrupted run's train.json, after checking it is the same run; None to start afresh."""
    if not cfg.resume:
        if (out / "train.json").exists() and not cfg.overwrite:
            raise ValueError(f"--out {out} already holds a training run (train.json): continue it with --resume, "
                             "replace it with --overwrite, or give another --out")
        return None
    summary_path = out / "train.json"
    summary = read_record(summary_path, "drop --resume to start the run afresh (with --overwrite)") if summary_path.exists() else {}
    if not summary.get("checkpoint") or not (out / summary["checkpoint"]).exists():
        raise FileNotFoundError(f"--resume: no interrupted run in {out} (needs train.json and the checkpoint it "
                                "names); drop --resume to start one")
    before, now = {**asdict(TrainConfig(data="", out="")), **summary["config"]}, asdict(cfg)  # older records lack newer keys
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k])
    if changed:
        raise ValueError("--resume: these settings differ from the interrupted run's: " + ", ".join(
            f"{k} (was {before.get(k)!r}, now {now[k]!r})" for k in changed) + "; use the same ones")
    moved = sorted(k for k, v in summary.get("inputs", inputs).items() if inputs.get(k, {}).get("sha256") != v["sha256"])
    if moved:
        raise ValueError("--resume: these input files changed since the interrupted run read them: " + ", ".join(
            f"{k} ({summary['inputs'][k]['path']})" for k in moved) + "; restore them or start a new run")
    return summary


def _save(model, path: Path) -> None:
    """Write, then rename: a kill mid-write leaves the previous file whole."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _reseed_layers(model, seed: int) -> None:
    """Dropout draws from a per-layer generator; reset it per epoch, as the batches are, so a run
    resumed from a checkpoint draws the same masks as one that never stopped."""
    for var in model.non_trainable_variables:
        if var.path.endswith("seed_generator_state"):
            var.assign(np.array([seed, 0], dtype=var.dtype))


def _mirror(seed: int):
    from keras import layers

    flip = layers.RandomFlip("horizontal", seed=seed)
    return lambda x, y: (flip(x, training=True), y)


def _epoch_data(images: np.ndarray, targets: np.ndarray, batch: int, seed: int, augment: str):
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices((images[..., None], targets))
            .shuffle(len(images), seed=seed)
            .batch(batch)
            .map(lambda x, y: (tf.cast(x, tf.float32), y))
            .map((_augmenter if augment == "camera" else _mirror)(seed))  # one call at a time: draws in a fixed order
            .prefetch(2))


def train(cfg: TrainConfig, log=print) -> dict:
    if cfg.init and cfg.base_width != BASE_WIDTH:
        raise ValueError("--base-width does not apply with --init: the net, and its width, come from the --init model")
    started = time.time()
    revision = code_revision()  # of this invocation; a resumed run records its last
    out = Path(cfg.out)
    inputs = _inputs(cfg, out)
    resumed = _resume_state(cfg, out, inputs)
    out.mkdir(parents=True, exist_ok=True)

    import keras

    keras.utils.set_random_seed(cfg.seed)

    images, targets = _training_set(cfg, log)
    rng = np.random.default_rng(cfg.seed)
    if cfg.limit:
        keep = rng.choice(len(images), size=min(cfg.limit, len(images)), replace=False)
        images, targets = images[keep], targets[keep]
    select = [load_fer2013(cfg.data, "PublicTest"), load_ferplus(cfg.data, "PublicTest")]
    log(f"train faces {len(images)} (--fer2013-labels {cfg.fer2013_labels}); select on PublicTest "
        f"fer2013={len(select[0].labels)} ferplus={len(select[1].labels)}")
    if cfg.teacher:
        targets = ((1 - KD_WEIGHT) * targets + KD_WEIGHT * teacher_probs(cfg.teacher, images)).astype(np.float32)
        public = [float((teacher_probs(cfg.teacher, s.images).argmax(1) == s.labels).mean()) for s in select]
        log(f"distilling from {len(cfg.teacher)} teacher(s), both views, weight {KD_WEIGHT}: "
            f"teacher PublicTest fer2013={public[0]:.4f} ferplus={public[1]:.4f}")

    steps = math.ceil(len(images) / cfg.batch)
    if resumed:
        model = load_keras(out / resumed["checkpoint"])  # compiled: optimizer state, step count
        history, best = resumed["history"], resumed["best_public"]
        spent = resumed["wall_seconds"]
        log(f"resuming after epoch {len(history)} of {cfg.epochs} (best so far: epoch {best['epoch']})")
    else:
        model = load_keras(cfg.init) if cfg.init else build_classifier(cfg.base_width)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (cfg.epochs - WARMUP_EPOCHS) * steps),
            warmup_target=cfg.lr, warmup_steps=WARMUP_EPOCHS * steps)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=WEIGHT_DECAY),
                      loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
        history, best, spent = [], {"score": -1.0}, 0.0
    checkpoint = resumed["checkpoint"] if resumed else None
    log(f"model {model.count_params()} parameters; {cfg.epochs} epochs x {steps} steps, batch {cfg.batch}")

    def summary() -> dict:
        return {"config": asdict(cfg), "best_epoch": best.get("epoch"), "best_public": best, "history": history,
                "checkpoint": checkpoint, "wall_seconds": round(spent + time.time() - started, 1),
                "code_revision": revision, "inputs": inputs}

    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.time()
        seed = _epoch_seed(cfg.seed, epoch)
        _reseed_layers(model, seed)
        fit = model.fit(_epoch_data(images, targets, cfg.batch, seed, cfg.augment), epochs=1, verbose=0)
        fer, ferplus = accuracy(model, select[0]), accuracy(model, select[1])
        score = (fer + ferplus) / 2
        row = {"epoch": epoch, "loss": round(fit.history["loss"][-1], 4), "public_fer2013": round(fer, 4),
               "public_ferplus": round(ferplus, 4), "seconds": round(time.time() - t0, 1)}
        history.append(row)
        if score > best["score"]:
            best = {"score": score, **row}
            _save(model, out / "model.keras")
        checkpoint = CHECKPOINT.format(epoch=epoch)
        _save(model, out / checkpoint)
        _write_json(out / "train.json", summary())
        for older in out.glob(CHECKPOINT.replace("{epoch:03d}", "*")):  # the last epoch's, or a replaced run's
            if older.name != checkpoint:
                older.unlink()
        log(json.dumps(row) + ("  *best" if best["epoch"] == epoch else ""))
        elapsed_min = (time.time() - started) / 60
        if cfg.time_budget_min and elapsed_min + row["seconds"] / 60 > cfg.time_budget_min:
            log(f"time budget {cfg.time_budget_min} min reached after epoch {epoch}; stopping "
                f"(continue with the same command and --resume)")
            break
    done = summary()
    _write_json(out / "train.json", done)
    log(f"done in {done['wall_seconds']} s; best epoch {best['epoch']}: {json.dumps(best)}")
    return done
