"""The offline toolchain: data loading, metrics, and a tiny real train -> convert -> verify run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from quantize.data import DataError, load_fer2013, load_ferplus, sha256_of
from edge_fer.model_card import PACKAGED_MODEL
from quantize.metrics import classification_report, expected_calibration_error

MINI = Path(__file__).parent / "data" / "mini"


def test_ferplus_rule_drops_non_faces_and_counts_ties(tmp_path):
    votes = np.array([
        [8, 2, 0, 0, 0, 0, 0, 0, 0, 0],  # neutral
        [0, 0, 0, 0, 0, 0, 0, 0, 3, 7],  # NF majority: dropped
        [0, 5, 5, 0, 0, 0, 0, 0, 0, 0],  # tie happiness/surprise
        [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],  # contempt majority: dropped
    ], np.uint8)
    cols = np.array(["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"])
    np.savez(tmp_path / "ferplus.npz", images=np.zeros((4, 48, 48), np.uint8), votes=votes, vote_columns=cols,
             usage=np.array(["PrivateTest"] * 4), names=np.array([f"fer{i:07d}.png" for i in range(4)]))
    split = load_ferplus(tmp_path, "PrivateTest")
    assert split.dropped == 2 and split.ties == 1
    assert list(split.labels) == [6, 3]  # neutral; the tie goes to happiness (first in label order)
    np.testing.assert_allclose(split.targets.sum(axis=1), 1.0)


def test_ferplus_majority_rule_is_ferplus_own(tmp_path):
    """microsoft/FERPlus: single votes are outliers; the label needs more than half of the rest."""
    votes = np.array([
        [6, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # neutral 6 of 10
        [5, 4, 1, 0, 0, 0, 0, 0, 0, 0],  # 5 of 10, but 5 of 9 once the single vote goes: neutral
        [4, 4, 2, 0, 0, 0, 0, 0, 0, 0],  # no majority: dropped
        [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],  # contempt majority: dropped
    ], np.uint8)
    cols = np.array(["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"])
    np.savez(tmp_path / "ferplus.npz", images=np.zeros((4, 48, 48), np.uint8), votes=votes, vote_columns=cols,
             usage=np.array(["PrivateTest"] * 4), names=np.array([f"fer{i:07d}.png" for i in range(4)]))
    split = load_ferplus(tmp_path, "PrivateTest", "majority")
    assert list(split.labels) == [6, 6] and split.dropped == 2 and split.ties == 0
    plurality = load_ferplus(tmp_path, "PrivateTest")
    assert list(plurality.labels) == [6, 6, 3] and plurality.dropped == 1 and plurality.ties == 1


@pytest.mark.parametrize("problem, match", [
    ("missing", "not found: pass --data"),
    ("not_npz", "damaged or not a NumPy archive"),
    ("wrong_shape", "must be uint8 \\(n, 48, 48\\)"),
    ("missing_key", "lacks keys \\['labels'\\]"),
])
def test_bad_data_gives_a_clear_error(tmp_path, problem, match):
    path = tmp_path / "fer2013.npz"
    if problem == "not_npz":
        path.write_text("hello")
    elif problem == "wrong_shape":
        np.savez(path, images=np.zeros((2, 64, 64), np.uint8), labels=np.zeros(2, np.int8), usage=np.array(["Training"] * 2))
    elif problem == "missing_key":
        np.savez(path, images=np.zeros((2, 48, 48), np.uint8), usage=np.array(["Training"] * 2))
    with pytest.raises(DataError, match=match):
        load_fer2013(tmp_path, "Training")


def test_unknown_split_is_named():
    with pytest.raises(DataError, match="unknown split 'Validation'"):
        load_fer2013(MINI, "Validation")


def test_metrics_on_a_hand_counted_example():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    labels = np.array([0, 1, 1, 0])
    report = classification_report(probs, labels, ("a", "b"))
    assert report["accuracy"] == 0.75
    assert report["confusion"] == [[2, 0], [1, 1]]
    assert report["recall"] == {"a": 1.0, "b": 0.5}
    # F1: a = 2*(2/3*1)/(2/3+1) = 0.8, b = 2*(1*0.5)/1.5 = 0.6667
    assert report["macro_f1"] == pytest.approx(0.7333, abs=1e-4)
    # One bin per distinct confidence (15 bins): |1-0.9|,|0-0.6|,|1-0.8|,|1-0.7| weighted 1/4 each
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)


TINY = ["--data", str(MINI), "--epochs", "2", "--batch", "32"]
MINI_PRIVATE_FERPLUS_COUNTS = {"ferplus": {"faces": 200, "dropped": 0, "ties": 6},
                               "ferplus_majority": {"faces": 176, "dropped": 24, "ties": 0}}
"""The mini fixture's 200 FER+ PrivateTest faces under each rule (the rules themselves are tested on
hand-built votes above): a change in how evaluate counts or drops faces shows here."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 2-epoch training run on the committed mini fixture; its output folder."""
    pytest.importorskip("tensorflow", reason="the toolchain needs the train extra: pip install -e .[train]")
    from quantize.__main__ import main

    out = tmp_path_factory.mktemp("tiny") / "train"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.train
def test_tiny_toolchain_run_trains_converts_and_int8_agrees_with_float(tiny_run, tmp_path, capsys):
    from quantize.__main__ import main

    history = json.loads((tiny_run / "train.json").read_text())
    assert len(history["history"]) == 2 and history["wall_seconds"] > 0
    model = tiny_run / "model.keras"
    assert main(["convert", "--data", str(MINI), "--model", str(model),
                 "--out", str(tmp_path / "model")]) == 0
    report = json.loads((tmp_path / "model" / "convert.json").read_text())
    # A 2-epoch model is near-uniform, so top-1 of near-ties may flip; the probabilities must agree.
    assert report["mean_abs_prob_diff"] < 0.02
    assert report["int8_float_top1_agreement"] >= 0.6
    assert report["int8_bytes"] < report["float_bytes"] / 3

    # evaluate, then card: the installed model and its card go in together, and match.
    from edge_fer.model_card import load_card

    reports, install = tmp_path / "reports", tmp_path / "install"
    assert main(["evaluate", "--data", str(MINI), "--model", str(model), "--models", str(tmp_path / "model"),
                 "--out", str(reports)]) == 0
    evaluation = json.loads((reports / "evaluation.json").read_text())
    assert set(evaluation["accuracy"]["tflite_int8"]) == {"fer2013", "ferplus", "ferplus_majority"}
    rules = evaluation["ferplus_rules"]
    assert {k: {n: v for n, v in r.items() if n != "rule"} for k, r in rules.items()} == MINI_PRIVATE_FERPLUS_COUNTS
    card_args = ["card", "--data", str(MINI), "--train", str(tiny_run), "--models", str(tmp_path / "model"),
                 "--reports", str(reports), "--install", str(install)]
    assert main(card_args) == 2  # no crop.json in these reports: nothing may be installed
    assert not install.exists()
    crop = json.loads((Path(__file__).parents[1] / "quantize" / "reports" / "crop.json").read_text())
    (reports / "crop.json").write_text(json.dumps(crop))
    assert main(card_args) == 2  # fitted on the full archives, not on --data's
    assert f"{reports / 'crop.json'} was made from fer2013.npz" in capsys.readouterr().err and not install.exists()
    for name in ("fer2013", "ferplus"):  # the same conventions, as if fitted on the mini archives
        crop["inputs"][name]["sha256"] = sha256_of(MINI / f"{name}.npz")
    (reports / "crop.json").write_text(json.dumps(crop))
    assert main(card_args) == 0
    evaluated = (reports / "evaluation.json").read_text()
    card = load_card(install / "expression_int8.tflite")  # checks the sha256 against the file
    assert sorted(p.name for p in install.iterdir()) == ["expression_int8.json", "expression_int8.tflite"]
    assert json.loads((install / "expression_int8.json").read_text())["metrics"]["ferplus_rules"] == rules
    assert card.input_size == (48, 48)
    # Metrics measured on another model file are refused, and the installed pair stays as it was.
    installed = {p.name: p.read_bytes() for p in install.iterdir()}
    evaluation["inputs"]["int8_model"]["sha256"] = "0" * 64
    (reports / "evaluation.json").write_text(json.dumps(evaluation))
    assert main(card_args) == 2
    assert {p.name: p.read_bytes() for p in install.iterdir()} == installed
    # So is a --train run whose model is not the one evaluated (its commands would remake another).
    (reports / "evaluation.json").write_text(json.dumps(json.loads(evaluated)))
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other)
    with open(other / "model.keras", "ab") as f:
        f.write(b"\0")
    assert main([*card_args[:3], "--train", str(other), *card_args[5:]]) == 2
    assert "is not the keras model" in capsys.readouterr().err  # convert.json names the real source
    assert main(["evaluate", "--data", str(MINI), "--model", str(other / "model.keras"), "--models",
                 str(tmp_path / "model"), "--out", str(tmp_path / "other-reports")]) == 2
    assert "run `python -m quantize convert --model" in capsys.readouterr().err
    # Metrics measured on other archives than --data would sit beside --data's hashes.
    on_other_data = json.loads(evaluated)
    on_other_data["inputs"]["fer2013"]["sha256"] = "1" * 64
    (reports / "evaluation.json").write_text(json.dumps(on_other_data))
    assert main(card_args) == 2
    assert "was made from fer2013.npz with sha256 111111111111" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in install.iterdir()} == installed
    # The card's commands are the ones the steps ran, as they recorded them.
    commands = json.loads((install / "expression_int8.json").read_text())["commands"]
    assert commands["convert"] == report["command"] and commands["evaluate"] == json.loads(evaluated)["command"]
    assert commands["convert"].endswith(f"--out {tmp_path / 'model'} --seed 1234")
    assert commands["card"] == "python -m quantize " + " ".join(card_args)  # the card names its own command


@pytest.mark.train
def test_a_failed_conversion_leaves_the_previous_files(tiny_run, tmp_path, capsys, monkeypatch):
    """A missing data folder, found after the float file was written, left a float model of one
    run beside the int8 model of another; now nothing is replaced until both are verified."""
    from quantize import convert
    from quantize.__main__ import main

    out = tmp_path / "model"
    out.mkdir()
    (out / "expression_float.tflite").write_bytes(b"previous float")
    (out / "expression_int8.tflite").write_bytes(b"previous int8")
    # Fail the int8 check, which runs after both new files are written under staged names.
    monkeypatch.setattr(convert, "MAX_MEAN_PROB_DIFF", -1.0)
    assert main(["convert", "--data", str(MINI), "--model", str(tiny_run / "model.keras"), "--out", str(out)]) == 1
    assert "calibration failed" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        "expression_float.tflite": b"previous float", "expression_int8.tflite": b"previous int8"}  # no staged file left


def test_a_tflite_that_is_no_expression_model_is_named(tmp_path, capsys):
    from quantize.__main__ import main

    detector = Path(__file__).parents[1] / "edge_fer" / "models" / "face_detection_short_range.tflite"
    assert main(["tradeoff", "--data", str(MINI), "--model", str(detector), "--out", str(tmp_path / "t.json")]) == 2
    assert "not an expression model (1, 48, 48, 1) -> 7 classes" in capsys.readouterr().err


def test_toolchain_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from quantize.__main__ import main

    not_keras = tmp_path / "model.keras"
    not_keras.write_text("not a model")
    assert main(["evaluate", "--data", str(MINI), "--model", str(not_keras), "--models", str(tmp_path)]) == 2
    assert "convert.json not found: run `python -m quantize convert" in capsys.readouterr().err
    assert main(["tradeoff", "--data", str(MINI), "--model", str(tmp_path / "none.tflite"),
                 "--out", str(tmp_path / "t.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--data", str(MINI), "--init", str(not_keras), "--base-width", "16"]) == 2
    assert "--base-width does not apply with --init" in capsys.readouterr().err
    assert main(["robustness", "--data", str(MINI), "--model", str(not_keras), "--model", str(not_keras),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "--model given twice" in capsys.readouterr().err  # it would compare a model with itself
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(MINI), "--epochs", "0"])
    assert exit_.value.code == 2 and "--epochs: 0 is below 1" in capsys.readouterr().err


def test_an_output_path_of_the_wrong_kind_is_refused_before_any_work(tmp_path, capsys):
    from quantize.__main__ import main

    a_file, a_folder = tmp_path / "afile", tmp_path / "adir"
    a_file.write_text("x")
    a_folder.mkdir()
    for argv, said in [
        (["train", "--out", str(a_file)], "is a file; give a folder"),
        (["convert", "--out", str(a_file)], "is a file; give a folder"),
        (["evaluate", "--out", str(a_file / "sub")], "is a file, so"),
        (["card", "--install", str(a_file)], "is a file; give a folder"),
        (["tradeoff", "--out", str(a_folder)], "is a folder; give the path of a file"),
        (["crop-fit", "--out", str(a_folder)], "is a folder; give the path of a file"),
        (["robustness", "--model", "m.keras", "--out", str(a_folder)], "is a folder; give the path of a file"),
        (["train", "--seed", "-1"], "--seed: -1 is below 0"),
        (["train", "--time-budget", "nan"], "--time-budget: nan is not a number of minutes"),
        (["train", "--time-budget", "-5"], "--time-budget: -5 is not a number of minutes"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([argv[0], "--data", str(MINI), *argv[1:]])
        assert exit_.value.code == 2, argv
        assert said in capsys.readouterr().err, argv


def test_a_step_without_the_train_extra_says_which_extra(monkeypatch, capsys):
    import builtins

    from quantize.__main__ import main

    real_import = builtins.__import__

    def no_keras(name, *args, **kwargs):
        if name.split(".")[0] in ("keras", "tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_keras)
    assert main(["convert", "--data", str(MINI), "--model", str(MINI / "fer2013.npz")]) == 2
    assert "from the train extra: pip install -e '.[train]'" in capsys.readouterr().err


@pytest.mark.parametrize("problem, message", [
    ("short_labels", "every key needs one row per image"),
    ("label_out_of_range", "labels must be 0..6"),
    ("no_public_rows", "has no PublicTest rows"),
    # a (n, 1) column broadcast against the predictions and scored 14% for a 46% model, exit 0
    ("label_column", r"labels must be a 1-D array of kind 'iu' .*\(\d+, 1\)"),
    ("labels_as_text", r"labels must be a 1-D array of kind 'iu' .*<U"),
    ("usage_scalar", r"usage must be a 1-D array"),
    ("object_array", r"damaged or not a NumPy archive \(ValueError: Object arrays cannot be loaded"),
])
def test_a_malformed_archive_says_which_file_and_what(tmp_path, problem, message):
    a = dict(np.load(MINI / "fer2013.npz"))
    if problem == "short_labels":
        a["labels"] = a["labels"][:-3]
    elif problem == "label_out_of_range":
        a["labels"] = a["labels"].copy()
        a["labels"][0] = 9
    elif problem == "label_column":
        a["labels"] = a["labels"][:, None]
    elif problem == "labels_as_text":
        a["labels"] = a["labels"].astype(str)
    elif problem == "usage_scalar":
        a["usage"] = np.array("PublicTest")
    elif problem == "object_array":
        a["labels"] = a["labels"].astype(object)
    else:
        a["usage"] = np.where(a["usage"] == "PublicTest", "Training", a["usage"])
    np.savez(tmp_path / "fer2013.npz", **a)
    with pytest.raises(DataError, match=message) as err:
        load_fer2013(tmp_path, "PublicTest")
    assert str(tmp_path / "fer2013.npz") in str(err.value)


@pytest.mark.parametrize("compress", [True, False])
def test_a_damaged_archive_member_is_a_clear_error_not_a_traceback(tmp_path, compress):
    """The zip directory is intact, a member's bytes are not (a bad copy): zlib or the CRC fails
    only when the array is read."""
    a = dict(np.load(MINI / "fer2013.npz"))
    (np.savez_compressed if compress else np.savez)(tmp_path / "fer2013.npz", **a)
    raw = bytearray((tmp_path / "fer2013.npz").read_bytes())
    middle = len(raw) // 3  # inside images.npy, the first and largest member
    raw[middle:middle + 64] = bytes(64)
    (tmp_path / "fer2013.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"fer2013\.npz is damaged or not a NumPy archive \((error|BadZipFile)"):
        load_fer2013(tmp_path, "PublicTest")


@pytest.mark.train
def test_an_interrupted_training_run_resumes_to_the_same_weights(tiny_run, tmp_path, capsys):
    import keras

    from quantize.__main__ import main

    out = tmp_path / "train"
    assert main(["train", *TINY, "--out", str(out), "--time-budget", "0.0001"]) == 0  # stops after epoch 1
    assert [r["epoch"] for r in json.loads((out / "train.json").read_text())["history"]] == [1]
    assert main(["train", *TINY, "--out", str(out), "--resume", "--lr", "0.01"]) == 2  # not the same run
    assert "lr (was 0.002, now 0.01)" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", str(out), "--resume"]) == 0
    resumed = json.loads((out / "train.json").read_text())
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert sorted(p.name for p in out.glob("*.keras")) == ["last-002.keras", "model.keras"]  # epoch 1's is gone
    # The same command again without --resume would have thrown the run away, silently.
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "already holds a training run (train.json): continue it with --resume" in capsys.readouterr().err
    whole, split = (keras.saving.load_model(d / json.loads((d / "train.json").read_text())["checkpoint"])
                    for d in (tiny_run, out))
    assert int(split.optimizer.iterations) == int(whole.optimizer.iterations)  # the schedule went on
    for a, b in zip(whole.get_weights(), split.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert main(["train", *TINY, "--out", str(out), "--overwrite", "--time-budget", "0.0001"]) == 0
    assert sorted(p.name for p in out.glob("*.keras")) == ["last-001.keras", "model.keras"]  # none of the old run's


@pytest.mark.train
def test_a_run_started_from_init_resumes_with_the_same_command(tiny_run, tmp_path):
    """The README's rule: the same command plus --resume, --init included."""
    from quantize.__main__ import main

    command = ["train", *TINY, "--out", str(tmp_path / "stage2"), "--init", str(tiny_run / "model.keras"),
               "--augment", "mirror"]
    assert main([*command, "--time-budget", "0.0001"]) == 0
    assert main([*command, "--resume"]) == 0
    record = json.loads((tmp_path / "stage2" / "train.json").read_text())
    assert [r["epoch"] for r in record["history"]] == [1, 2] and record["config"]["augment"] == "mirror"
    assert main([*command[:-1], "camera", "--resume"]) == 2  # another augmentation is another run


@pytest.mark.train
def test_a_student_distils_from_a_teacher_that_sees_both_views(tiny_run, tmp_path):
    from quantize.__main__ import main
    from quantize.train import teacher_probs

    faces = load_ferplus(str(MINI), "PublicTest").images[:16]
    teacher = str(tiny_run / "model.keras")
    np.testing.assert_allclose(teacher_probs([teacher], faces), teacher_probs([teacher], faces[:, :, ::-1]),
                               atol=1e-6)  # the soft target does not depend on the flip augmentation
    out = tmp_path / "student"
    assert main(["train", *TINY, "--out", str(out), "--teacher", teacher]) == 0
    record = json.loads((out / "train.json").read_text())
    assert record["config"]["teacher"] == [teacher]
    assert record["inputs"]["teacher1"] == {"path": teacher, "sha256": sha256_of(Path(teacher))}
    assert record["inputs"]["ferplus"]["sha256"] == sha256_of(MINI / "ferplus.npz")
    # A teacher in the run's own --out would be overwritten by the run it teaches.
    assert main(["train", *TINY, "--out", str(tiny_run), "--teacher", teacher]) == 2


def test_training_targets_without_fer2013_are_the_ferplus_vote_distributions():
    from quantize.train import TrainConfig, _training_set

    plus = load_ferplus(MINI, "Training")
    images, targets = _training_set(TrainConfig(data=str(MINI), out="-", fer2013_labels="none"), log=lambda _: None)
    np.testing.assert_array_equal(images, plus.images)
    np.testing.assert_allclose(targets, plus.targets)
    _, matched = _training_set(TrainConfig(data=str(MINI), out="-"), log=lambda _: None)
    assert not np.allclose(matched, plus.targets)  # the default mixes in FER2013's labels


def test_training_targets_with_fer2013_only_are_its_matched_labels_on_the_sharp_faces():
    from quantize.match import match_labels
    from quantize.train import TrainConfig, _training_set

    fer, plus = load_fer2013(MINI, "Training"), load_ferplus(MINI, "Training")
    matched = match_labels(fer, plus)
    sure = matched >= 0
    assert 0 < sure.sum() < len(plus.images)  # the fixture has faces FER2013 cannot be matched to
    images, targets = _training_set(TrainConfig(data=str(MINI), out="-", fer2013_labels="only"), log=lambda _: None)
    np.testing.assert_array_equal(images, plus.images[sure])
    np.testing.assert_array_equal(targets.argmax(axis=1), matched[sure])
    assert np.all(targets.max(axis=1) > 0.8)  # a smoothed one-hot label, not a vote distribution


def test_resume_refuses_when_a_file_the_run_read_has_changed(tmp_path):
    from dataclasses import asdict

    from quantize.train import TrainConfig, _inputs, _resume_state

    cfg = TrainConfig(data=str(MINI), out=str(tmp_path), resume=True)
    inputs = _inputs(cfg, tmp_path)
    assert inputs["fer2013"]["sha256"] == sha256_of(MINI / "fer2013.npz")
    (tmp_path / "last-001.keras").write_bytes(b"checkpoint")
    record = {"config": asdict(cfg), "checkpoint": "last-001.keras", "inputs": json.loads(json.dumps(inputs))}
    (tmp_path / "train.json").write_text(json.dumps(record))
    assert _resume_state(cfg, tmp_path, inputs)["inputs"] == inputs
    record["inputs"]["ferplus"]["sha256"] = "0" * 64  # the archive was replaced since
    (tmp_path / "train.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"input files changed since the interrupted run read them: ferplus \("):
        _resume_state(cfg, tmp_path, inputs)


def test_resume_without_an_interrupted_run_says_so_and_exits_2(tmp_path, capsys):
    from quantize.__main__ import main

    assert main(["train", *TINY, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


def test_toolchain_reports_missing_data_and_exits_2(tmp_path, capsys):
    from quantize.__main__ import main

    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "fer2013.npz not found: pass --data" in capsys.readouterr().err


def test_the_blurred_fer2013_training_split_is_detected_as_blurred():
    from quantize.match import SHARP_FLOOR, sharpness

    assert sharpness(load_fer2013(MINI, "Training").images) < SHARP_FLOOR
    assert sharpness(load_ferplus(MINI, "Training").images) > 10 * SHARP_FLOOR
    assert sharpness(load_fer2013(MINI, "PrivateTest").images) > 10 * SHARP_FLOOR


def test_labels_are_carried_to_the_sharp_copy_of_each_face_and_strangers_get_none():
    import cv2

    from quantize.data import Split
    from quantize.match import match_labels

    sharp = load_ferplus(MINI, "Training")
    rng = np.random.default_rng(0)
    twins = rng.permutation(len(sharp.images))[: len(sharp.images) // 2]
    # The archive's blur, then a JPEG round trip (its images come from the JPEG release).
    blurred_images = np.stack([cv2.imdecode(cv2.imencode(".jpg", cv2.GaussianBlur(sharp.images[i], (0, 0), 3.0),
                                                         [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_GRAYSCALE)
                               for i in twins])
    labels = rng.integers(0, 7, len(twins))
    blurred = Split("Training", "fer2013", blurred_images, np.eye(7)[labels], labels)
    matched = match_labels(blurred, sharp)
    assert (matched[twins] == labels).mean() >= 0.95
    strangers = np.setdiff1d(np.arange(len(sharp.images)), twins)
    assert (matched[strangers] == -1).mean() >= 0.95


def test_label_agreement_counts_disagreed_faces_and_what_both_bars_would_need():
    """Hand-counted: 10 FER+ faces, 8 of them also in FER2013 (4 agree, 4 disagree) + 2 FER2013-only."""
    import cv2

    from quantize.agreement import label_agreement
    from quantize.data import Split

    faces = load_ferplus(MINI, "PrivateTest")
    plus_images, plus_labels = faces.images[:10], faces.labels[:10]
    plus = Split("PrivateTest", "ferplus", plus_images, np.eye(7)[plus_labels], plus_labels)
    strangers = load_ferplus(MINI, "Training").images[:2]
    jpeg = [cv2.imdecode(cv2.imencode(".jpg", i, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_GRAYSCALE)
            for i in plus_images[:8]]
    fer_images = np.stack(jpeg[::-1] + list(strangers))  # shuffled order: pairing is by content
    paired_labels = np.concatenate([plus_labels[:4], (plus_labels[4:8] + 1) % 7])
    fer_labels = np.concatenate([paired_labels[::-1], [0, 1]])
    fer = Split("PrivateTest", "fer2013", fer_images, np.eye(7)[fer_labels], fer_labels)

    predicted_plus = plus_labels.copy()
    predicted_plus[4:6] = (plus_labels[4:6] + 1) % 7  # gives FER2013's label
    predicted_plus[7] = (plus_labels[7] + 2) % 7  # gives neither
    predicted_fer = fer_labels.copy()
    predicted_fer[9] = 3  # one FER2013-only face wrong

    report = label_agreement(fer, plus, predicted_fer, predicted_plus)
    assert report["faces_paired"] == 8 and report["faces_labels_disagree"] == 4
    assert report["labels_agree"] == 0.5
    assert report["model_on_disagreed_faces"] == {"gives_fer2013_label": 0.5, "gives_ferplus_label": 0.25,
                                                  "gives_neither": 0.25}
    assert report["model_accuracy_where_labels_agree"] == 1.0
    # Any classifier: 4 agreed + 2 FER+-only + 4 disagreed, minus the 1 FER2013 needs to reach 7/10.
    assert report["ceiling_ferplus_if_fer2013_at_bar"] == 0.9
    # FER2013 needs 7 - 5 hits = 2 of 4 disagreed; FER+ needs 8.5 - 6 = 2.5 of 4.
    assert report["disagreed_share_needed_for_both_bars"] == {"fer2013": 0.5, "ferplus": 0.625, "total": 1.125}
    assert report["accuracy_where_labels_agree_needed_for_both_bars"] == pytest.approx((7 + 8.5 - 1 - 2 - 4) / 8)


def test_the_card_lists_every_training_command_in_the_order_they_must_run(tmp_path):
    from quantize.card import training_stages

    def run(name: str, epochs_run: int = 3, **config) -> Path:
        out = tmp_path / name
        out.mkdir()
        config = {"data": "d", "out": str(out), "epochs": 3, "batch": 128, "lr": 0.002, "seed": 1,
                  "time_budget_min": 80.0, "fer2013_labels": "matched", "base_width": 32, "init": "",
                  "resume": False, "teacher": [], **config}
        models = [config["init"]] if config["init"] else []
        record = {"config": config, "history": [{"epoch": e} for e in range(1, epochs_run + 1)], "best_epoch": 1,
                  "wall_seconds": 100.0 * (len(list(tmp_path.iterdir()))),  # 100, 200, 300, 400
                  "inputs": {f"model{i}": {"path": m, "sha256": sha256_of(Path(m))} for i, m in enumerate(models)}}
        (out / "train.json").write_text(json.dumps(record))
        (out / "model.keras").write_bytes(name.encode())
        return out / "model.keras"

    first = run("first")
    wide = run("wide", base_width=64, resume=True, limit=500)
    second = run("second", init=str(first), epochs_run=2, augment="mirror")
    student = run("student", init=str(second), teacher=[str(wide), str(second)])
    records = training_stages(student.parent, {})
    stages = [r["command"] for r in records]
    outs = [c.split("--out ")[1].split()[0] for c in stages]
    assert outs == [str(first.parent), str(second.parent), str(wide.parent), str(student.parent)]
    assert "--base-width 64" in stages[2] and "--resume" not in stages[2]
    assert "--time-budget" not in stages[0]  # ran all its epochs: the budget is no part of the recipe
    assert "--time-budget 80.0" in stages[1]  # the budget ended it at epoch 2 of 3
    assert "--augment mirror" in stages[1] and "--augment" not in stages[0]  # camera, the default, is implied
    assert f"--init {second} --teacher {wide} --teacher {second}" in stages[3]
    assert "--limit 500" in stages[2] and "--limit" not in stages[3]
    assert [r["wall_seconds"] for r in records] == [100, 300, 200, 400]  # each stage once, teachers included
    assert records[3]["model_sha256"] == sha256_of(student)
    # A stage whose --init is no longer the file it read cannot be remade by its command.
    first.write_bytes(b"retrained")
    with pytest.raises(ValueError, match=f"{second.parent} read model0 {first} with sha256"):
        training_stages(student.parent, {})
    # Nor can a run that needs its own output.
    loop = json.loads((first.parent / "train.json").read_text())
    loop["config"]["init"], loop["inputs"] = str(student), {}
    (first.parent / "train.json").write_text(json.dumps(loop))
    with pytest.raises(ValueError, match="needs its own output"):
        training_stages(student.parent, {})


def test_test_faces_that_are_also_training_faces_are_found_for_both_label_sets(tmp_path):
    from quantize.data import Split
    from quantize.duplicates import training_duplicates

    rng = np.random.default_rng(0)
    a, b, c = (cv2_smooth(rng.integers(0, 256, (48, 48), np.uint8)) for _ in range(3))
    cols = np.array(["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"])
    np.savez(tmp_path / "ferplus.npz", images=np.stack([a, b, a, c]), votes=np.zeros((4, 10), np.uint8),
             vote_columns=cols, usage=np.array(["Training", "Training", "PrivateTest", "PrivateTest"]))
    nudged = a.copy()
    nudged[0, 0] ^= 1

    def split(source: str, *images: np.ndarray) -> Split:
        n = len(images)
        return Split("PrivateTest", source, np.stack(images), np.zeros((n, 7), np.float32), np.zeros(n, np.int64))

    assert training_duplicates(tmp_path, split("ferplus", a, c, nudged)).tolist() == [True, False, False]
    # FER2013's copy of a face differs in its pixels (JPEG); it is matched to its FER+ twin first.
    lossy = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    assert training_duplicates(tmp_path, split("fer2013", c, lossy)).tolist() == [False, True]


def cv2_smooth(image: np.ndarray) -> np.ndarray:
    """Face-like low-frequency content, so thumbnails of different images differ clearly."""
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 4)


def _biased_scores(rng: np.random.Generator, labels: np.ndarray, against: int, by: float) -> np.ndarray:
    """Noisy log-scores that favour the true class, with class ``against`` pushed down ``by``."""
    scores = rng.normal(0, 1, (len(labels), 7)) + 1.5 * np.eye(7)[labels]
    scores[:, against] -= by
    return scores


def test_fitted_offsets_undo_a_prior_shift_and_only_where_it_pays():
    from quantize.tradeoff import accuracy, fit_offsets

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 4000)
    scores = _biased_scores(rng, labels, against=2, by=0.8)
    offsets = fit_offsets(scores, labels)
    assert 0.4 <= offsets[2] <= 1.2, offsets  # the push-down, undone
    assert accuracy(scores, labels, offsets) > accuracy(scores, labels, np.zeros(7)) + 0.02
    unbiased = _biased_scores(rng, labels, against=2, by=0.0)
    assert accuracy(unbiased, labels, fit_offsets(unbiased, labels)) - accuracy(unbiased, labels, np.zeros(7)) < 0.01


def test_sweep_trades_one_label_set_for_the_other_scored_on_faces_it_did_not_fit():
    """Two label sets for the same faces that disagree on class 0 vs 1: each end of the sweep
    favours its own set, and the row without offsets is the model as it is."""
    from quantize.tradeoff import accuracy, cross_fitted_sweep

    rng = np.random.default_rng(2)
    truth = rng.integers(0, 7, 3000)
    scores = _biased_scores(rng, truth, against=0, by=0.0)
    fer = np.where((truth == 1) & (rng.random(3000) < 0.8), 0, truth)  # most of FER+'s 1s are FER2013's 0s
    rows = cross_fitted_sweep({"fer2013": (scores, fer), "ferplus_majority": (scores, truth)})
    model, plus_end, fer_end = rows[0], rows[1], rows[-1]
    assert model["toward_fer2013"] is None and plus_end["toward_fer2013"] == 0.0 and fer_end["toward_fer2013"] == 1.0
    assert fer_end["fer2013"] > plus_end["fer2013"] + 0.01
    assert plus_end["ferplus_majority"] > fer_end["ferplus_majority"] + 0.01
    assert model["fer2013"] == pytest.approx(accuracy(scores, fer, np.zeros(7)), abs=0.01)


def test_tradeoff_command_writes_the_sweep(tmp_path):
    from quantize.__main__ import main

    out = tmp_path / "tradeoff.json"
    assert main(["tradeoff", "--data", str(MINI), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["split"].startswith("PublicTest")
    assert [r["toward_fer2013"] for r in report["sweep"]] == [None] + [round(0.1 * i, 2) for i in range(11)]
    assert set(report["offsets_fitted_on_all_of_publictest"]) == {"fer2013", "ferplus_majority"}
    assert report["inputs"]["int8_model"]["path"].endswith("expression_int8.tflite")
    assert report["inputs"]["fer2013"]["sha256"] == sha256_of(MINI / "fer2013.npz")  # what it was measured on
    assert report["command"] == f"python -m quantize tradeoff --data {MINI} --model {os.path.relpath(PACKAGED_MODEL)} --out {out}"


def test_mcnemar_says_when_a_split_of_discordant_faces_is_chance():
    from quantize.robustness import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)  # all 6 one way: 2 * 0.5**6
    assert mcnemar_p(103, 130) == pytest.approx(0.0883, abs=1e-4)  # scipy.stats.binomtest(130, 233)
    assert mcnemar_p(2, 8) == mcnemar_p(8, 2)


def test_every_camera_degradation_keeps_the_faces_and_changes_them():
    from quantize.robustness import CONDITIONS

    faces = np.random.default_rng(1).integers(40, 215, (4, 48, 48)).astype(np.uint8)
    for name, degrade in CONDITIONS.items():
        out = degrade(faces)
        assert out.shape == faces.shape and out.dtype == np.uint8, name
        assert (name == "clean") == np.array_equal(out, faces), name


@pytest.mark.train
def test_overwrite_keeps_the_old_run_until_the_new_one_has_an_epoch(tmp_path, capsys):
    """A replacement run that fails on its data must leave the old run resumable."""
    pytest.importorskip("tensorflow", reason="the toolchain needs the train extra: pip install -e .[train]")
    from quantize.__main__ import main

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(MINI / "ferplus.npz", bad / "ferplus.npz")
    a = dict(np.load(MINI / "fer2013.npz"))
    a["labels"] = a["labels"][:, None]
    np.savez(bad / "fer2013.npz", **a)
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({"checkpoint": "last-003.keras"}))
    (run / "last-003.keras").write_bytes(b"the old run's checkpoint")
    assert main(["train", "--data", str(bad), "--out", str(run), "--overwrite"]) == 2
    assert "labels must be a 1-D array" in capsys.readouterr().err
    assert (run / "last-003.keras").read_bytes() == b"the old run's checkpoint"
