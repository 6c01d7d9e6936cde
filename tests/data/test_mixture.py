"""Mixture strings: sources, labels and weights; every malformed one is one error naming the part."""

import numpy as np
import pytest

from lmlab.data.mixture import default_label, mixture_weights, parse_mixture


def test_parse_names_labels_and_weights():
    assert parse_mixture("shakespeare:0.7, python_stdlib:0.3") == {
        "shakespeare": ("shakespeare", 0.7), "python_stdlib": ("python_stdlib", 0.3)}
    assert parse_mixture("code=~/src/**/*.py:1,notes/my notes.jsonl.gz:2") == {
        "code": ("~/src/**/*.py", 1.0), "my_notes": ("notes/my notes.jsonl.gz", 2.0)}
    np.testing.assert_allclose(mixture_weights("a/x.txt:1,b/y.txt:3"), [0.25, 0.75])
    assert default_label("data/books/") == "books" and default_label("x.jsonl") == "x"


@pytest.mark.parametrize("text, message", [
    ("shakespeare", "'shakespeare' is not CORPUS:WEIGHT"),
    ("shakespeare:0.7,python_stdlib:lots", "the weight 'lots' of 'python_stdlib:lots' is not a number"),
    ("shakespeare:-1", "must be a finite number >= 0"),
    ("shakespeare:nan", "must be a finite number >= 0"),
    ("shakespeare:0,python_stdlib:0", "the weights sum to 0"),
    ("a/x.txt:1,b/x.txt:1", "two sources are labelled 'x'"),
    ("bad label=a.txt:1", "the label 'bad label'"),
    (":1", "is not CORPUS:WEIGHT"),
])
def test_malformed_mixtures_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match="^data.mixture") as error:
        parse_mixture(text)
    assert message in str(error.value) and "\n" not in str(error.value)
