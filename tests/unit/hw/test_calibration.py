"""Every calibration constant names its source; at most four are FITTED, each on named training rows,
and `supernode calibrate` (hw.fit) reproduces the shipped values."""

from __future__ import annotations

import re
from dataclasses import fields, replace

from supernode.hw import calibration as cal
from supernode.hw.calibration import Sourced
from supernode.hw.fit import compare, fit, loss
from supernode.hw.specs import SHIPPED, Tuning

SOURCE = re.compile(r"§|Table|\[v[23]\]|\[DSV3-cfg\]|\[DeepEP\]|\[DERIVED\]|^DERIVED")
TRAINING = re.compile(r"6,688|5,655|874|1,260|49\.4|14\.9")


def _constants() -> dict[str, object]:
    return {k: v for k, v in vars(cal).items() if k.isupper() and not k.startswith("_")}


def test_every_upper_case_name_is_sourced() -> None:
    constants = _constants()
    assert len(constants) >= 30
    for name, value in constants.items():
        assert isinstance(value, Sourced), f"{name} is not a Sourced constant"


def test_every_constant_has_a_source_assumption_or_fit_label() -> None:
    for name, const in _constants().items():
        assert isinstance(const, Sourced)
        src = const.source.strip()
        assert src, f"{name} has no source"
        labelled = src.startswith(("ASSUMPTION:", "FITTED:"))
        assert labelled or SOURCE.search(src), f"{name}: {src!r} names no source"
        if labelled:
            assert len(src) > len("ASSUMPTION: ") + 10, f"{name}: label without a reason"


def test_at_most_four_fitted_constants_each_naming_its_training_rows() -> None:
    fitted = {
        n: c for n, c in _constants().items() if isinstance(c, Sourced) and c.source.startswith("FITTED:")
    }
    assert 1 <= len(fitted) <= 4
    for name, const in fitted.items():
        assert TRAINING.search(const.source), f"{name} does not name the rows it was fitted on"
    assert {f.name for f in fields(Tuning)} == {n.lower() for n in fitted}


def test_only_fitted_constants_use_end_to_end_rows() -> None:
    for name, const in _constants().items():
        assert isinstance(const, Sourced)
        if const.source.startswith(("ASSUMPTION:", "[")) and name != "TRAINING_ROWS":
            assert "end-to-end" not in const.source, name


def test_refit_reproduces_the_shipped_constants() -> None:
    refit = fit()
    for name, fitted_value, shipped in compare(refit):
        assert fitted_value == shipped, (
            f"{name}: refit {fitted_value} != shipped {shipped}; run `supernode calibrate`"
        )


def test_shipped_constants_beat_a_perturbed_fit() -> None:
    base = loss(SHIPPED)
    for f in fields(Tuning):
        if f.name == "default_eplb_hot_factor":
            continue
        value = getattr(SHIPPED, f.name)
        for factor in (0.8, 1.2):
            assert loss(replace(SHIPPED, **{f.name: value * factor})) >= base, f.name
