"""Yes / no options typed as words (bundle overrides) are read as the user meant, and anything else is refused."""

import pytest

from infnet_monai.utils.validation import check_flag


@pytest.mark.parametrize(
    "value,expected",
    [(True, True), (False, False), ("false", False), ("False", False), ("no", False), ("0", False), (0, False),
     ("true", True), ("YES", True), ("1", True), (1, True)],
)
def test_words_and_bools(value, expected):
    assert check_flag(value, "resume") is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, None, [True]])
def test_anything_else_names_the_option(value):
    with pytest.raises(ValueError, match="save_probability must be true or false"):
        check_flag(value, "save_probability")
