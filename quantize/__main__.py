"""``python -m quantize {train,convert,evaluate,card}``: one subcommand per step."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantize.data import DataError

DEFAULT_DATA = "../shared/data"


def _train(args) -> None:
    from quantize.train import TrainConfig, train

    train(TrainConfig(data=args.data, out=args.out, epochs=args.epochs, batch=args.batch, lr=args.lr,
                      seed=args.seed, time_budget_min=args.time_budget, limit=args.limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantize", description=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)

    p = sub.add_parser("train", help="train the float Keras model")
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with fer2013.npz and ferplus.npz")
    p.add_argument("--out", default="build/train", help="output folder (model.keras, train.json)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--time-budget", type=float, default=0.0, help="minutes; stop after the epoch that would pass it")
    p.add_argument("--limit", type=int, default=0, help="train on only this many faces (smoke runs)")
    p.set_defaults(run=_train)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
