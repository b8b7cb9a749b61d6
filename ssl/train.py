"""Train image and location encoders from a pairs manifest.

Placeholder interface: the objectives and the training loop land with the trainer.
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ssl.train",
        description="Train GeoCLR / SimCLR / SP / CSP encoders from a pairs.parquet manifest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--manifest", required=True, help="pairs.parquet written by the pipeline")
    parser.add_argument(
        "--objective", choices=["simclr", "geoclr", "csp"], default="geoclr",
        help="training objective",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise SystemExit(
        f"the trainer is not implemented yet (manifest {args.manifest}, objective {args.objective})"
    )


if __name__ == "__main__":
    main()
