"""The user-facing error type: one line naming the key or file and the fix."""


class PipelineError(Exception):
    """A user mistake (bad config, missing file, failed gate): printed as one line, exit code 1, no traceback.

    Bugs are not PipelineErrors: they keep their tracebacks.
    """


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message, cut at ``limit`` characters; its type's name when it has none.

    Args:
        error: any exception, typically a library's.
        limit: the most characters kept.

    Returns:
        One non-empty line for a PipelineError message.
    """
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
