"""Money: prices per million tokens, what a call costs, and how amounts are shown.

Every amount the product stores or passes around is an integer number of
micro-dollars (USD x 1e6): a task's `cost`, a run's `spent` and `budget_micro`,
an estimate's `cost_micro`. People give and read dollars: `parse_dollars` turns
what they type into micro-dollars once, `fmt_dollars` is the one way an amount is
shown (pages, the run state sent over the websocket, messages, the CLI).

Prices are set per provider as {model: [input, output]} in dollars per million
tokens ("*" prices every other model of that provider). A price in dollars per
million tokens times a token count is a cost in micro-dollars.
"""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICRO = 1_000_000  # micro-dollars in a dollar


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


def priced_cost(price, tokens_in, tokens_out):
    """What `tokens_in` and `tokens_out` cost at `price` (input, output $/1M), in whole micro-dollars."""
    return round(tokens_in * price[0] + tokens_out * price[1])


def cost_micro(prices, model, tokens_in, tokens_out):
    """A call's cost in whole micro-dollars (0 when the model has no price)."""
    price = price_for(prices, model)
    if price is None:
        return 0
    return priced_cost(price, tokens_in, tokens_out)


def dollars(micro):
    """Micro-dollars as a Decimal of dollars (for a form's initial value, never for sums)."""
    return Decimal(int(micro)) / MICRO


def parse_dollars(amount):
    """An amount of dollars a person gave (text, int or Decimal) as whole micro-dollars.

    None or "" stays None; raises ValueError when it is not a finite, non-negative amount."""
    if amount is None or amount == "":
        return None
    try:
        value = Decimal(str(amount).strip().replace("$", "").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{amount!r} is not an amount of dollars") from None
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not an amount of dollars")
    if value < 0:
        raise ValueError("an amount of money cannot be negative")
    return int((value * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fmt_dollars(micro):
    """Micro-dollars for people: "$1,234.50", or four decimals for an amount under a
    dollar that is not whole cents ("$0.0125", "$0.0012")."""
    micro = int(micro or 0)
    amount = Decimal(micro) / MICRO
    if micro and abs(micro) < MICRO and micro % 10_000:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def over_budget(spent_micro, budget_micro):
    """True when there is a budget and the spend has reached it."""
    return budget_micro is not None and int(spent_micro or 0) >= budget_micro


def paused_message(spent_micro, budget_micro):
    return (
        f"Paused: spent {fmt_dollars(spent_micro)} of the "
        f"{fmt_dollars(budget_micro)} budget; raise the budget to continue"
    )
