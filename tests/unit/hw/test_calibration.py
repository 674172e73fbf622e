"""Every calibration constant names its source in the reference or is labelled ASSUMPTION."""

from __future__ import annotations

import re

from supernode.hw import calibration as cal
from supernode.hw.calibration import Sourced

SOURCE = re.compile(r"§|Table|\[v[23]\]|\[DSV3-cfg\]|\[DeepEP\]|\[DERIVED\]|^DERIVED")


def _constants() -> dict[str, object]:
    return {k: v for k, v in vars(cal).items() if k.isupper() and not k.startswith("_")}


def test_every_upper_case_name_is_sourced() -> None:
    constants = _constants()
    assert len(constants) >= 30
    for name, value in constants.items():
        assert isinstance(value, Sourced), f"{name} is not a Sourced constant"


def test_every_constant_has_a_source_or_assumption_label() -> None:
    for name, const in _constants().items():
        assert isinstance(const, Sourced)
        src = const.source.strip()
        assert src, f"{name} has no source"
        assert src.startswith("ASSUMPTION:") or SOURCE.search(src), f"{name}: {src!r} names no source"
        if src.startswith("ASSUMPTION:"):
            assert len(src) > len("ASSUMPTION: ") + 10, f"{name}: assumption without a reason"


def test_only_the_eplb_imbalance_comes_from_an_end_to_end_result() -> None:
    e2e = [n for n, c in _constants().items() if isinstance(c, Sourced) and "end-to-end" in c.source]
    assert e2e == ["DEFAULT_EPLB_IMBALANCE"]
