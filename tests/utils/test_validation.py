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


@pytest.mark.parametrize("value,expected", [(352, (352, 352)), ([64, 48], (64, 48)), ((32.0, 32), (32, 32)), (7, (7, 7))])
def test_spatial_size_int_or_pair(value, expected):
    from infnet_monai.utils.validation import check_spatial_size

    assert check_spatial_size(value) == expected


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "352", None, [352], [1, 2, 3], [64, 0]])
def test_spatial_size_refused(value):
    from infnet_monai.utils.validation import check_spatial_size

    with pytest.raises(ValueError, match="spatial_size must be a positive int or 2"):
        check_spatial_size(value)
