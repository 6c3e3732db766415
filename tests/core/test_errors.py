"""first_line: the one line a PipelineError carries from a library's exception."""

from stages.core.errors import first_line


def test_first_line_keeps_the_first_non_empty_line_cut_at_the_limit():
    assert first_line(ValueError("bad shape\nTraceback (most recent call last):\n  ...")) == "bad shape"
    assert first_line(RuntimeError("  x" * 200), limit=10) == "x  x  x  x"
    assert first_line(RuntimeError("\n\n  second\nthird")) == "second"


def test_an_empty_message_gives_the_exception_type_not_an_index_error():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("   \n ")) == "OSError"
