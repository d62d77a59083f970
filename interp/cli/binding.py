"""Positional, lexical and reflexive binding mechanisms: patching sweep, shares and the mixing model.

    interp binding smollm2 --task boxes --groups 3,5,10 --layers auto
    interp binding organism --groups 5,8,10
"""

from interp.analyze.binding_cli import add_binding_arguments as add_arguments
from interp.analyze.binding_cli import binding_command as run

__all__ = ["add_arguments", "run"]
