"""check_types: a wrong type or an unset value in params is one line naming the key, the value and what is expected."""

import pytest

from stages.core.errors import PipelineError
from stages.core.schema import check_types
from tests.helpers import ROOT

CONF = str(ROOT / "conf")


def test_values_of_the_kinds_conf_gives_pass():
    check_types({"benchmark": {"duration_s": 2, "rounds": 3, "batch_sizes": [1, 8]}}, conf_dir=CONF)
    check_types({"model": {"data": {"eval": "???"}}}, conf_dir=CONF)  # optional data files may stay unset


def test_a_wrong_type_names_key_value_and_the_file_that_sets_it():
    with pytest.raises(PipelineError, match=r"^benchmark.rounds: 'three' is text, expected an integer \(conf/"):
        check_types({"benchmark": {"rounds": "three"}}, conf_dir=CONF)


def test_an_unset_mandatory_value_says_how_to_set_it():
    with pytest.raises(PipelineError, match=r"^model.code is not set \(\?\?\?\): set it with -S model.code=\.\.\.$"):
        check_types({"model": {"code": "???"}}, conf_dir=CONF)


def test_only_the_keys_asked_for_are_checked():
    check_types({"benchmark": {"rounds": "three"}, "export": {"opset": 17}}, keys=["export"], conf_dir=CONF)
