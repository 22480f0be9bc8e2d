"""The one user-facing error type (DESIGN.md, Conventions: Errors)."""


class InpaintBenchError(Exception):
    """An error the user can fix: the message says what is wrong and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
