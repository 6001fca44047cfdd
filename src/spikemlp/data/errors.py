"""The one error type the data layer raises for problems a user can fix (missing, broken or odd data)."""

from __future__ import annotations


class DataError(ValueError):
    """A data set is missing, incomplete or unreadable. The message names the path, what was expected there
    and what to do; the ``spikemlp`` command prints it without a traceback (it is a ``ValueError``)."""
