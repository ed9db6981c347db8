"""``python -m training {data,train}``: fetch MNIST, or train, export and publish a model."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from training.config import DEFAULTS, config_for
from training.data import CACHE_FILE, default_cache_dir, load_mnist
from training.errors import TrainingError

PROG = "training"
USAGE_ERROR = 2  # argparse's status for a bad command line
VALIDATION_IMAGES = max(config.validation_images for config in DEFAULTS.values())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="fetch, verify and cache MNIST")
    add_cache_dir(data)

    train = commands.add_parser(
        "train",
        help="train a model, export it to ONNX and publish it as a new version",
        description="Options left out take the model's published defaults: "
        + "; ".join(
            f"{name}: {c.epochs} epochs, batch {c.batch_size}, max_lr {c.max_lr}"
            for name, c in DEFAULTS.items()
        ),
    )
    positive = int_at_least(1)
    train.add_argument("--model", choices=sorted(DEFAULTS), required=True)
    train.add_argument("--out", type=Path, default=Path("models"), help="model repository")
    train.add_argument("--epochs", type=positive)
    train.add_argument("--batch-size", type=positive)
    train.add_argument(
        "--max-lr", type=number_in(0, inclusive=False), help="peak LR of the one-cycle schedule"
    )
    train.add_argument(
        "--hidden", type=positive, nargs="+", help="hidden layer sizes, e.g. 512 512"
    )
    train.add_argument("--dropout", type=number_in(0, below=1))
    train.add_argument("--weight-decay", type=number_in(0))
    train.add_argument("--shift-px", type=int_at_least(0), help="random shifts (0 = none)")
    train.add_argument("--seed", type=int_at_least(0, below=2**32))  # numpy's seed range
    train.add_argument("--threads", type=positive, help="torch threads (results depend on it)")
    train.add_argument(
        "--train-images-limit",
        type=int_at_least(
            VALIDATION_IMAGES + 1, why=f"the last {VALIDATION_IMAGES} training images validate"
        ),
        help=f"train on the first N images only (the last {VALIDATION_IMAGES} of them validate)",
    )
    add_cache_dir(train)
    return parser.parse_args(argv)


def int_at_least(minimum: int, *, below: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (and < below), else a one-line usage error."""
    reason = f" ({why})" if why else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{reason}, got {value}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below}, got {value}")
        return value

    return parse


def number_in(
    minimum: float, *, inclusive: bool = True, below: float | None = None
) -> Callable[[str], float]:
    """An argparse type: a finite float >= minimum (> if not inclusive), and < below if given."""
    bounds = f"{'>=' if inclusive else '>'} {minimum:g}"
    bounds += f" and < {below:g}" if below is not None else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        is_valid = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        if not is_valid or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text}")
        return value

    return parse


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"where MNIST is cached (default $MNIST_SERVE_DATA_DIR or {default_cache_dir()})",
    )


def run_data(args: argparse.Namespace) -> None:
    mnist = load_mnist(args.cache_dir)
    cache_dir = args.cache_dir or default_cache_dir()
    print(f"MNIST verified: {len(mnist.train_images)} train, {len(mnist.test_images)} test")
    print(f"cached in {cache_dir / CACHE_FILE}")
    print(f"SHA-256 {mnist.sha256()}")


def run_train(args: argparse.Namespace) -> Path:
    # torch is imported only here: `python -m training data` needs numpy alone.
    from training.export import check_can_publish, publish
    from training.train import fit

    config = config_for(
        args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_lr=args.max_lr,
        hidden=tuple(args.hidden) if args.hidden else None,
        dropout=args.dropout,
        weight_decay=args.weight_decay,
        shift_px=args.shift_px,
        seed=args.seed,
        threads=args.threads,
        train_images_limit=args.train_images_limit,
    )
    check_can_publish(args.out, config.model)  # before minutes of training, not after
    mnist = load_mnist(args.cache_dir)
    result = fit(config, mnist)
    version_dir = publish(result, mnist, args.out)
    print(
        f"published {version_dir}: test accuracy {result.test_accuracy:.4f} (PyTorch), "
        f"validation {result.validation_accuracy:.4f}, trained in {result.training_time_s:.0f} s"
    )
    return version_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("training").setLevel(logging.INFO)  # ours only: the exporter is chatty
    try:
        if args.command == "data":
            run_data(args)
        else:
            run_train(args)
    except TrainingError as error:
        # Not a bug: say what is wrong, as argparse would (a fetch failure lists each source).
        for line in str(error).splitlines():
            print(f"{PROG}: error: {line}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
