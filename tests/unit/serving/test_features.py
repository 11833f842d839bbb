import math

import numpy as np
import pytest

from serving.config import FeatureRoles
from serving.features import ROLES, MissingFeatureError, TickView, resolve_roles


def test_roles_resolve_to_indices_wherever_the_names_are():
    roles = FeatureRoles()
    names = ["x", *reversed([getattr(roles, r) for r in ROLES]), "y"]
    ordered, index, pick = resolve_roles(roles, names)
    vector = np.arange(len(names), dtype=np.float64)
    assert vector[index].tolist() == list(pick(vector.tolist()))
    assert [names[int(i)] for i in vector[index]] == list(ordered)


def test_a_missing_feature_is_one_line_naming_the_role():
    names = [getattr(FeatureRoles(), r) for r in ROLES if r != "atr"]
    with pytest.raises(MissingFeatureError) as err:
        resolve_roles(FeatureRoles(), names)
    assert "atr='atr_tick_100'" in str(err.value) and "\n" not in str(err.value)


def test_the_view_unpacks_in_roles_order():
    view = TickView()
    view.set_features([float(i) for i in range(len(ROLES))])
    assert [getattr(view, role) for role in ROLES] == list(range(len(ROLES)))
    assert view.finite


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_any_non_finite_value_marks_the_view(bad):
    view = TickView()
    values = [0.0] * len(ROLES)
    values[5] = bad
    view.set_features(values)
    assert not view.finite
