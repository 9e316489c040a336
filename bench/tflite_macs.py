"""Multiply-accumulates per invoke of a TFLite model, counted from its graph.

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
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_fer.interpreter import BACKENDS, available_backends  # noqa: E402


def count_macs(path: str | Path) -> dict[str, int]:
    """MACs per op type and in total (key "total") for one invoke at batch 1."""
    interpreter = importlib.import_module(BACKENDS[available_backends()[0]]).Interpreter(model_path=str(path))
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interpreter.get_tensor_details()}
    macs: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the only op-level view the Python API gives
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
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
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    print(json.dumps({m: count_macs(m) for m in args.models}, indent=2))


if __name__ == "__main__":
    main()
