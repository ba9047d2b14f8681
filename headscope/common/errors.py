"""The one exception type that headscope raises for bad input."""

from __future__ import annotations


class HeadscopeError(ValueError):
    """Bad input or an impossible request.

    The message always says what was wrong and what to do instead; the CLI prints it as
    one line and exits with status 2.
    """
