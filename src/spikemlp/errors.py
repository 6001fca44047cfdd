"""The error a person can act on, shared by the command line and every subcommand.

Raised with a message that names the problem and what to do; ``spikemlp.cli`` prints it as one line,
without a traceback. A module of its own so that commands need not import the command line to raise it.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error the user can act on: printed as one line, without a traceback."""
