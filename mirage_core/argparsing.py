"""Command-line parsing where options may come anywhere, as in ``ros2 launch``.

Plain :class:`argparse.ArgumentParser` splits a variable-length positional (``nargs="*"`` or
``"+"``) at the first option: ``mirage launch sim_rollout --timeout 30 tiny:=true`` leaves
``tiny:=true`` "unrecognized". :meth:`argparse.ArgumentParser.parse_intermixed_args`
(Python >= 3.7) collects the positionals around the options instead, but it refuses parsers
with sub-commands. :class:`IntermixedArgumentParser` uses the intermixed parse wherever it is
allowed (every leaf parser: a sub-command's own parser) and the plain one elsewhere, so one
top-level parser with sub-commands accepts options anywhere after each sub-command's name.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["IntermixedArgumentParser"]


class IntermixedArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose options may sit between positionals.

    Sub-parsers made with ``add_subparsers()`` are of this class too (argparse uses the
    parent's class), so each sub-command is parsed intermixed. ``--`` still ends options. A
    leaf parser owns all its arguments: an unknown one exits (code 2) with that sub-command's
    usage line, so ``parse_known_args`` of a leaf never returns leftovers.
    """

    _intermixing = False

    def _can_intermix(self) -> bool:
        # parse_intermixed_args refuses sub-commands (nargs=PARSER) and REMAINDER positionals
        return not any(a.nargs in (argparse.PARSER, argparse.REMAINDER)
                       for a in self._get_positional_actions())

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None):
        # parse_known_intermixed_args calls parse_known_args itself (twice): the flag makes
        # those inner calls the plain parse.
        if self._intermixing or not self._can_intermix():
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, extras = super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:
            # a sub-command owns all its arguments: say so with its own usage line, not the
            # top-level one argparse would print for leftovers
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras
