"""Agreement between reviewers against hand computations."""

import pytest

from runner.spec import agreement as ag

A, R = "accepted", "rejected"


def test_cohens_kappa_by_hand():
    # po = 4/5; reviewer a accepts 3 of 5, b accepts 2: pe = (3*2 + 2*3) / 25 = 0.48
    kappa = ag.cohen_kappa([A, A, R, R, A], [A, R, R, R, A])
    assert kappa == pytest.approx((0.8 - 0.48) / (1 - 0.48))
    assert ag.cohen_kappa([A, R], [A, R]) == pytest.approx(1.0)
    assert ag.cohen_kappa([A, A], [A, A]) is None  # one label only: undefined


def test_fleiss_kappa_and_percent_agreement_by_hand():
    items = [[A, A, A], [A, A, R], [R, R, R], [A, R, R]]
    # P_i = 1, 1/3, 1, 1/3 -> P-bar 2/3; 6 of 12 verdicts accept: Pe = 0.5
    assert ag.fleiss_kappa(items) == pytest.approx((2 / 3 - 0.5) / 0.5)
    mean, unanimous = ag.percent_agreement(items + [[A]])  # one verdict only: left out
    assert mean == pytest.approx(2 / 3) and unanimous == 0.5
    with pytest.raises(ValueError):
        ag.fleiss_kappa([[A, A], [A, A, R]])


def test_the_spread_of_ratings():
    assert ag.rating_spread([[4, 2], [5, 5], [3]]) == (1.0, 0.5)
    assert ag.rating_spread([[3]]) == (None, None)
