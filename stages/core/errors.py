"""The user-facing error type: one line naming the key or file and the fix."""


class PipelineError(Exception):
    """A user mistake (bad config, missing file, failed gate): printed as one line, exit code 1, no traceback.

    Bugs are not PipelineErrors: they keep their tracebacks.
    """
