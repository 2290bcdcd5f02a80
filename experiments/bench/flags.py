"""The benchmarks' argument parsing: a parser whose errors are one line naming the flag, and the flags several
subcommands share, defined once (each subcommand picks its defaults)."""

from __future__ import annotations

import argparse
import json

from cml_tf.cli import console


class BenchParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` that reports a bad flag or subcommand as one line ``error: ...`` (exit code 1)."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        console.fail(message)


def ints(text: str) -> list[int]:
    """A comma list of integers (``26000,160000``; empty: none)."""
    try:
        return [int(x.replace("_", "")) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def names(text: str) -> list[str]:
    """A comma list of names (``uniform,2stage``)."""
    return [x for x in text.split(",") if x]


def variants(text: str) -> dict[str, dict]:
    """A JSON object: variant name -> Config fields (``{"no GOR": {"gor_weight": 0}}``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError("expected a JSON object of name -> object of Config fields")
    return value


def fields(text: str) -> dict:
    """A JSON object of Config fields (``{"gor_weight": 1}``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of Config fields")
    return value


#: flag -> (type, help) of the flags several subcommands take
COMMON = {
    "rounds": (int, "rounds alternating what is compared (or repeated timings); figures are medians over them"),
    "users": (int, "users of the synthetic training matrix (the floors' user table)"),
    "items": (int, "items of the synthetic training matrix (the floors' item table)"),
    "catalogs": (ints, "comma list of item counts"),
    "nnz": (int, "training pairs of the synthetic matrix"),
    "batch_size": (int, "positive pairs per batch"),
    "num_negatives": (int, "|N_ij|, negatives per positive pair"),
    "steps": (int, "timed steps per measurement (after a warm-up)"),
    "before": (str, "an earlier commit to time in the same rounds (its own timing code, exported by git archive)"),
    "variants": (variants, 'JSON: name -> Config fields of this tree, e.g. {"no GOR": {"gor_weight": 0}}'),
}


def positive(name: str):
    """An argparse type: an integer >= 1 (the message names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
        return value

    parse.__name__ = name
    return parse


def common(parser: argparse.ArgumentParser, **defaults) -> None:
    """Adds the `COMMON` flags named in ``defaults``, each with its default there.

    Integer flags must be >= 1 (a default of None: "unset", e.g. the evaluator's own batch size).
    """
    for name, default in defaults.items():
        kind, text = COMMON[name]
        kind = positive(name) if kind is int else kind
        parser.add_argument(f"--{name}", type=kind, default=default, help=f"{text} (default: {default})")
