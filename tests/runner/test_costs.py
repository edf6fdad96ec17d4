"""Prices, per-call costs, budget messages and estimates (no worker, no HTTP)."""

from decimal import Decimal

import pytest

from runner.engine.endpoints import Endpoint
from runner.models import Run
from runner.spec import PipelineSpec, estimate, money
from runner.spec.library import get


def test_price_lookup_exact_prefix_and_wildcard():
    prices = {"gpt-4o-mini": [0.15, 0.6], "gpt-4o": [2.5, 10], "*": [1, 2]}
    assert money.price_for(prices, "gpt-4o-mini") == (0.15, 0.6)
    assert money.price_for(prices, "gpt-4o-mini-2024-07-18") == (0.15, 0.6)  # longest prefix
    assert money.price_for(prices, "gpt-4o-2024-08-06") == (2.5, 10.0)
    assert money.price_for(prices, "claude-x") == (1.0, 2.0)
    assert money.price_for({"gemini-2.0-flash": [0.1, 0.4]}, "models/gemini-2.0-flash") == (
        0.1,
        0.4,
    )
    assert money.price_for({}, "m") is None
    assert money.price_for({"m": "cheap"}, "m") is None


def test_cost_is_in_micro_dollars():
    # $ per million tokens x tokens = micro-dollars
    assert money.cost_micro({"m": [0.5, 1.5]}, "m", 1000, 200) == 800.0
    assert money.cost_micro({}, "m", 1000, 200) == 0.0
    assert money.dollars(1_500_000) == 1.5


def test_budget_and_pause_message():
    run = Run(budget=Decimal("1.00"), spent=999_999)
    assert not money.over_budget(run)
    run.spent = 1_020_000
    assert money.over_budget(run)
    assert not money.over_budget(Run(budget=None, spent=10**9))
    assert (
        money.paused_message(1_020_000, Decimal("1.00"))
        == "Paused: spent $1.02 of the $1.00 budget; raise the budget to continue"
    )
    assert money.fmt_dollars(0.00123) == "$0.0012"


def _endpoints(spec, prices):
    return [
        Endpoint("openai", "http://x/v1", "", "m", 4, "pool", prices=prices) for _ in spec.steps
    ]


def test_estimate_follows_the_callbacks():
    spec = get("qa-from-topics").spec
    inputs = [{"topic": "Solar energy"}, {"topic": "Tides"}, {"topic": "Bees"}]
    est = estimate.estimate(spec, inputs, _endpoints(spec, {"m": [1.0, 2.0]}))
    assert [s.calls for s in est.steps] == [3, 15, 15]
    assert est.calls == 33
    assert all(s.tokens_in > 0 and s.tokens_out > 0 for s in est.steps)
    assert est.cost == pytest.approx((est.tokens_in * 1.0 + est.tokens_out * 2.0) / 1e6)
    assert est.assumptions == [] and est.unpriced == []
    # the answers see the questions: later prompts are longer than their templates alone
    assert est.steps[2].tokens_in / 15 > 20


def test_estimate_without_prices_or_numbers_says_so():
    data = get("qa-from-topics").spec.to_dict()
    data["steps"][0]["prompt"] = "List subtopics of {{topic}} as a JSON list."
    data["steps"][1]["callback"] = {"type": "broadcast", "n": 3}
    spec = PipelineSpec.load(data)
    est = estimate.estimate(spec, [{"topic": "Tides"}], _endpoints(spec, {}))
    assert [s.calls for s in est.steps] == [1, 5, 15]
    assert est.unpriced == ["m"] and not est.complete
    assert est.cost == 0
    text = est.summary()
    assert "about 21 calls" in text and "no price is set for m" in text
    assert "'subtopics' assumed to make 5 items per task" in text


def test_estimate_of_an_aggregate_is_one_call():
    data = get("qa-from-topics").spec.to_dict()
    data["steps"][1]["callback"] = {"type": "aggregate", "into": "questions"}
    data["steps"][2]["prompt"] = "Summarise: {{questions}}"
    spec = PipelineSpec.load(data)
    est = estimate.estimate(spec, [{"topic": "A"}, {"topic": "B"}], _endpoints(spec, {}))
    assert [s.calls for s in est.steps] == [2, 10, 1]
    assert est.steps[2].tokens_in > est.steps[1].tokens_in / 10  # one big prompt
