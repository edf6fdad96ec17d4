"""Money: prices per million tokens, what a call costs, and how amounts are shown.

Prices are set per provider as {model: [input, output]} in dollars per million
tokens ("*" prices every other model of that provider). A price in dollars per
million tokens times a token count is a cost in micro-dollars.
"""

from decimal import Decimal


def price_for(prices, model):
    """(input, output) dollars per million tokens for `model`, or None.

    Exact name first, then the longest priced name the model starts with (so
    "gpt-4o-mini" prices "gpt-4o-mini-2024-07-18"), then "*"."""
    if not isinstance(prices, dict) or not prices:
        return None
    name = (model or "").removeprefix("models/")
    found = prices.get(model) or prices.get(name)
    if found is None:
        starts = [k for k in prices if k != "*" and name.startswith(k)]
        if starts:
            found = prices[max(starts, key=len)]
        else:
            found = prices.get("*")
    try:
        pin, pout = found
        return float(pin), float(pout)
    except (TypeError, ValueError):
        return None


def cost_micro(prices, model, tokens_in, tokens_out):
    """A call's cost in micro-dollars (0 when the model has no price)."""
    price = price_for(prices, model)
    if price is None:
        return 0.0
    return tokens_in * price[0] + tokens_out * price[1]


def dollars(micro):
    return micro / 1e6


def fmt_dollars(amount):
    amount = float(amount)
    if amount and abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def budget_micro(budget):
    return None if budget is None else float(Decimal(budget) * 1_000_000)


def over_budget(run, spent=None):
    """True when a run with a budget has spent all of it."""
    if run.budget is None:
        return False
    spent = run.spent if spent is None else spent
    return spent >= budget_micro(run.budget)


def paused_message(spent_micro, budget):
    return (
        f"Paused: spent {fmt_dollars(dollars(spent_micro))} of the "
        f"{fmt_dollars(budget)} budget; raise the budget to continue"
    )
