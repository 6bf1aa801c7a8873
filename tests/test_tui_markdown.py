"""Replies rendered as Markdown with the highlight spans laid over the rendered characters."""
from __future__ import annotations

from tui.markdown import render_markdown, span_ranges
from tui.widgets import span_style


def styled(text, style: str) -> str:
    """The characters of `text` that carry `style`, in order."""
    return "".join(text.plain[s.start:s.end] for s in text.spans if str(s.style) == style)


def test_markers_are_not_shown_and_spans_follow_their_characters():
    source = "# Title\n\nUse **bold** and `code()`:\n\n```python\nx = 1\n```\n- item *one*\n"
    spans = [["# Ti", "target", False], ["tle\n\nUse **bo", "context", False],
             ["ld** and `co", "target", False], ["de()`:\n\n```python\nx", "pld", False],
             [" = 1\n```\n- item *one*\n", "target", False]]
    assert "".join(s[0] for s in spans) == source
    text = render_markdown(source, span_ranges(spans, span_style))
    assert text.plain.splitlines() == ["Title", "", "Use bold and code():", "", "python", " x = 1 ", "• item one"]
    assert styled(text, span_style("context", False)) == "tleUse bo"  # the '#', '**' are not shown
    assert styled(text, span_style("pld", False)) == "de():x"  # through the backtick and the fence
    assert any(str(s.style) == "bold" and text.plain[s.start:s.end] == "bold" for s in text.spans)


def test_an_unclosed_fence_while_streaming_is_code_and_snake_case_stays():
    text = render_markdown("Run:\n```sh\nls my_file_name\n", [(0, 3, "red")])
    assert text.plain.splitlines() == ["Run:", "sh", " ls my_file_name ", "  "]
    assert styled(text, "red") == "Run"
