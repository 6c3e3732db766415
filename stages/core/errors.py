"""The user-facing error type: one line naming the key or file and the fix."""

import re

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes some libraries put in their messages


class PipelineError(Exception):
    """A user mistake (bad config, missing file, failed gate): printed as one line, exit code 1, no traceback.

    Bugs are not PipelineErrors: they keep their tracebacks.
    """


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message without colour codes, cut at ``limit`` characters; its type's name
    when it has none.

    Args:
        error: any exception, typically a library's.
        limit: the most characters kept.

    Returns:
        One non-empty line for a PipelineError message.
    """
    text = ANSI.sub("", str(error)).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def root_cause(error: BaseException) -> BaseException:
    """The end of ``error``'s ``raise ... from`` chain: what went wrong, where a library wraps it in a step's
    generic text ("Failed to decompose the FX graph for ONNX compatibility" over "Cannot view a tensor ...").
    Implicit contexts (an error raised while handling another) are not followed: there the later one is the news.

    Args:
        error: any exception.

    Returns:
        The last exception of the explicit cause chain (``error`` itself when it has no cause).
    """
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def summary(error: BaseException, limit: int = 300) -> str:
    """``first_line`` of ``error``'s root cause, with the cause's type: the line a user acts on.

    Args:
        error: any exception.
        limit: the most characters kept.

    Returns:
        ``Type: first line`` of the root cause, or ``error``'s own first line when it has no cause.
    """
    cause = root_cause(error)
    return first_line(error, limit) if cause is error else f"{type(cause).__name__}: {first_line(cause, limit)}"
