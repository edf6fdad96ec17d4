"""Prices, per-call costs, budget messages and estimates (no worker, no HTTP)."""

import pytest

from runner.engine.endpoints import Endpoint
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
    assert money.cost_micro({"m": [0.5, 1.5]}, "m", 1000, 200) == 800
    assert money.cost_micro({}, "m", 1000, 200) == 0
    assert money.dollars(1_500_000) == 1.5


def test_budget_and_pause_message():
    budget = money.parse_dollars("1.00")
    assert not money.over_budget(999_999, budget)
    assert money.over_budget(1_020_000, budget)
    assert not money.over_budget(10**9, None)
    assert (
        money.paused_message(1_020_000, budget)
        == "Paused: spent $1.02 of the $1.00 budget; raise the budget to continue"
    )
    assert money.fmt_dollars(1230) == "$0.0012"


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
    assert est.cost_micro == est.tokens_in * 1 + est.tokens_out * 2
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
    assert est.cost_micro == 0
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


def test_money_is_whole_micro_dollars_and_one_formatter():
    # $ per million tokens x tokens, rounded once per call
    assert money.cost_micro({"m": [0.15, 0.6]}, "m", 333, 77) == round(333 * 0.15 + 77 * 0.6)
    assert isinstance(money.cost_micro({"m": [0.15, 0.6]}, "m", 333, 77), int)
    assert money.parse_dollars("2.50") == 2_500_000
    assert money.parse_dollars(" $1,234.5 ") == 1_234_500_000
    assert money.parse_dollars(None) is None and money.parse_dollars("") is None
    for bad in ("lots", "nan", "-1"):
        with pytest.raises(ValueError):
            money.parse_dollars(bad)
    assert money.fmt_dollars(0) == "$0.00"
    assert money.fmt_dollars(500_000) == "$0.50"
    assert money.fmt_dollars(12_500) == "$0.0125"
    assert money.fmt_dollars(1_234_567_890) == "$1,234.57"


def test_prompt_numbers_one_table_and_template_tags_ignored():
    assert estimate.items_asked("List eleven subtopics of {{topic}}") == (11, True)
    assert estimate.items_asked("Give me 7 ideas") == (7, True)
    assert estimate.items_asked("Write {{ 3 }} lines {% for i in range(9) %}{% endfor %}") == (
        estimate.DEFAULT_ITEMS,
        False,
    )
    assert estimate.items_asked("Nineteen facts") == (19, True)
    assert estimate.items_asked("Facts from 2020") == (estimate.DEFAULT_ITEMS, False)


def test_one_question_for_each_item_of_a_pooled_list():
    spec = get("topics-flatten-qa").spec
    counts = estimate.count(spec, spec.inputs)  # 3 topics x "List 3 ..." pooled into one list
    assert [(c.calls, c.made) for c in counts] == [(3, 1), (1, 9), (9, 9)]
    est = estimate.estimate(spec, spec.inputs)
    assert est.chain == "3 topics → 1 list of subtopics → 9 questions → 9 answers"
    assert est.calls == 13 and est.cost_micro == 0 and est.unpriced == []
    assert est.reply_sizes and all("tokens" in s for s in est.reply_sizes)
