"""first_line and summary: the one line a PipelineError carries from a library's exception."""

from stages.core.errors import first_line, root_cause, summary


def test_first_line_keeps_the_first_non_empty_line_cut_at_the_limit():
    assert first_line(ValueError("bad shape\nTraceback (most recent call last):\n  ...")) == "bad shape"
    assert first_line(RuntimeError("  x" * 200), limit=10) == "x  x  x  x"
    assert first_line(RuntimeError("\n\n  second\nthird")) == "second"


def test_an_empty_message_gives_the_exception_type_not_an_index_error():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("   \n ")) == "OSError"


def test_colour_codes_are_dropped():
    coloured = RuntimeError("Failed to export. \x1b[96mThis is step 1/3\x1b[0m of exporting")
    assert first_line(coloured) == "Failed to export. This is step 1/3 of exporting"


def wrapped(cause: BaseException, context: BaseException | None = None) -> BaseException:
    """A library's step error raised ``from`` ``cause`` (while handling ``context``, when given)."""
    try:
        try:
            raise cause
        except BaseException as inner:
            if context is not None:
                inner.__context__ = context
            raise RuntimeError("Failed to decompose the FX graph for ONNX compatibility.") from inner
    except RuntimeError as outer:
        return outer


def test_summary_names_the_root_cause_not_the_step():
    """The end of the ``raise ... from`` chain with its type; an implicit context inside it is not followed."""
    error = wrapped(ValueError("Cannot view a tensor with shape [s33, 4, 16] as (s33, 64)!"), KeyError("later"))
    assert isinstance(root_cause(error), ValueError)
    assert summary(error) == "ValueError: Cannot view a tensor with shape [s33, 4, 16] as (s33, 64)!"
    plain = ValueError("bad input")
    assert root_cause(plain) is plain and summary(plain) == "bad input"
