import pytest

from interp.axes import head_label, parse_head
from interp.errors import InterpError


@pytest.mark.fast
@pytest.mark.parametrize("text", ["18.6", "18-6", "18:6", "L18.H6", " 18 . 6 ", "L18H6"])
def test_every_spelling_of_a_head_reads_as_one(text):
    assert parse_head(text) == (18, 6)
    assert head_label(*parse_head(text)) == "18.6"


@pytest.mark.fast
@pytest.mark.parametrize("text", ["18", "18.6.1", "a.b", "18/6", ""])
def test_a_head_that_is_not_a_label_is_refused(text):
    with pytest.raises(InterpError, match="LAYER.HEAD"):
        parse_head(text)
