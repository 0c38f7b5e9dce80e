"""What the command modules share: the consoles, the option types, comma-list parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgeopt.report.console import STDOUT

# No markup: file names, node names and error messages come from users' files, and a name such
# as "in/[red]x.onnx" must print as itself ("[/x]" would even crash Rich's markup parser).
console = STDOUT
err_console = Console(stderr=True, markup=False)

ModelArg = Annotated[
    str, typer.Argument(help="model.onnx | program.pt2 | package.module:factory | zoo:NAME?width=")
]
DataOpt = Annotated[
    str | None,
    typer.Option("--data", "-d", help="digits | idx:DIR | npz:FILE | images:DIR | audio:DIR"),
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="state dict for a zoo or factory model")
]


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ("a", "b", "c"): the items of a comma-list option."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def float_list(text: str, option: str) -> tuple[float, ...]:
    """``0.5,0.25`` as numbers; anything else is one sentence naming the option."""
    from edgeopt.errors import InputError

    try:
        return tuple(float(item) for item in comma_list(text))
    except ValueError:
        raise InputError(f"{option}: give a comma list of numbers, got {text!r}.") from None


def int_list(text: str, option: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); anything but whole numbers is one sentence of bad input."""
    from edgeopt.errors import InputError

    items = comma_list(text)
    for item in items:
        if not item.lstrip("-").isdigit():
            raise InputError(
                f"{option}: {item!r} is not a whole number; give a comma-separated list such as "
                "1,8,32."
            )
    return tuple(int(item) for item in items)


def trained_outputs(output: Path) -> tuple[Path, ...]:
    """The files ``train`` and ``distill`` write for ``-o OUT.onnx``; another suffix is a usage
    error of ``--output``."""
    from edgeopt.training import trained_paths

    if output.suffix != ".onnx":
        raise typer.BadParameter("the output must end in .onnx", param_hint="--output")
    return trained_paths(output)
