"""Estimates before a run: how many calls, tokens and dollars a spec will take.

    estimate(spec, inputs, endpoints)  # endpoints: one per step, with .model and .prices
        -> Estimate(calls=..., tokens_in=..., tokens_out=..., cost=dollars, ...)

Pure: the caller resolves which endpoint (and prices) each step uses
(`runner.engine.lifecycle.estimate_run` does it as a launch would).
"""

import re
from dataclasses import dataclass, field

from . import templating
from .money import dollars, fmt_dollars, price_for
from .schema import PipelineSpec

CHARS_PER_TOKEN = 4  # a fair average for English prose in every provider's tokenizer
DEFAULT_FAN = 5  # items a scatter/split step is assumed to make when its prompt gives no number
OUT_TOKENS = {"text": 250, "json_object": 150}  # assumed reply sizes by output format
LIST_ITEM_TOKENS = 20
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
_NUMBER_RE = re.compile(r"\b(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")\b", re.I)


# -- estimates -----------------------------------------------------------------------


@dataclass
class StepEstimate:
    name: str
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost: float | None  # dollars; None when the model has no price


@dataclass
class Estimate:
    calls: int
    tokens_in: int
    tokens_out: int
    cost: float  # dollars, for the steps whose model has a price
    steps: list[StepEstimate] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)  # models with no price set
    assumptions: list[str] = field(default_factory=list)

    @property
    def complete(self):
        """True when every step's model has a price."""
        return not self.unpriced

    def summary(self):
        text = (
            f"about {self.calls:,} calls, {_k(self.tokens_in)} tokens in and "
            f"{_k(self.tokens_out)} out"
        )
        if self.unpriced and not any(s.cost for s in self.steps):
            text += "; no price is set for " + ", ".join(self.unpriced)
        elif not self.unpriced and not self.cost:
            text += ", free"
        else:
            text += f", about {fmt_dollars(self.cost)}"
            if self.unpriced:
                text += " (not counting " + ", ".join(self.unpriced) + ": no price set)"
        if self.assumptions:
            text += " (" + "; ".join(self.assumptions) + ")"
        return text


def _k(n):
    return f"{n / 1000:,.1f}k" if n >= 10_000 else f"{n:,}"


def fan_out(step):
    """(children per task, assumption or None) for a step's callback."""
    cb = step.callback
    if cb.type == "broadcast":
        return cb.n or 1, None
    if cb.type in ("scatter", "split", "split_lines"):
        match = _NUMBER_RE.search(step.prompt)
        if match:
            word = match.group(1).lower()
            n = int(word) if word.isdigit() else _NUMBER_WORDS[word]
            if 1 <= n <= 100:
                return n, None
        return DEFAULT_FAN, f"'{step.name}' assumed to make {DEFAULT_FAN} items per task"
    if cb.type in ("aggregate", "flatten"):
        return None, None  # N -> 1 (or one per group)
    return 1, None


def _out_tokens(step, fan):
    fmt = str(step.output_format)
    guess = (fan or DEFAULT_FAN) * LIST_ITEM_TOKENS + 10 if fmt == "json_list" else OUT_TOKENS[fmt]
    if step.params.max_tokens:
        guess = min(guess, step.params.max_tokens)
    return guess


def _prompt_chars(step, sizes):
    """Characters of a step's prompt with each variable replaced by its assumed size."""
    total = 0
    for source in (step.prompt, step.system):
        if not source:
            continue
        try:
            names = templating.variables(source)
        except templating.TemplateError:
            names = set()
        total += len(re.sub(r"{{.*?}}|{%.*?%}", "", source, flags=re.S))
        total += sum(sizes.get(n, 50) for n in names)
    return total


def estimate(spec, inputs, endpoints):
    """Estimate a run's calls, tokens and cost before it starts.

    `spec` is a PipelineSpec (or its dict), `inputs` the run's list of input dicts,
    `endpoints` one per step (anything with `.model` and `.prices`). Counts assume the
    prompts' own numbers for scatter steps (else 5 items) and typical reply sizes;
    the result says which assumptions it made and which models have no price.
    """
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.model_validate(spec)
    inputs = list(inputs or [])
    sizes = {}
    for row in inputs:
        for k, v in row.items():
            sizes[k] = sizes.get(k, 0) + len(str(v)) / len(inputs)
    calls = len(inputs)
    steps, unpriced, assumptions = [], [], []
    for i, step in enumerate(spec.steps):
        ep = endpoints[i]
        if i == 0 and inputs:
            chars = 0
            for row in inputs:
                try:
                    chars += len(templating.render(step.prompt, row))
                    chars += len(templating.render(step.system, row)) if step.system else 0
                except templating.TemplateError:
                    chars += _prompt_chars(step, sizes)
            tokens_in = chars // CHARS_PER_TOKEN
        else:
            tokens_in = calls * (_prompt_chars(step, sizes) // CHARS_PER_TOKEN)
        fan, note = fan_out(step)
        if note:
            assumptions.append(note)
        out_each = _out_tokens(step, fan)
        tokens_in += calls * 8  # message framing
        tokens_out = calls * out_each
        price = price_for(ep.prices, ep.model) if ep else None
        cost = None
        if price is not None:
            cost = dollars(tokens_in * price[0] + tokens_out * price[1])
        elif ep and ep.model not in unpriced:
            unpriced.append(ep.model)
        steps.append(
            StepEstimate(step.name, ep.model if ep else "", calls, tokens_in, tokens_out, cost)
        )
        # what the next step sees
        out_chars = out_each * CHARS_PER_TOKEN
        cb = step.callback
        for key in step.result_keys():
            if cb.type in ("scatter", "split", "split_lines"):
                sizes[key] = out_chars / (fan or 1)
            elif cb.type in ("aggregate", "flatten"):
                sizes[key] = out_chars * max(calls, 1)
            else:
                sizes[key] = out_chars
        calls = 1 if fan is None else calls * fan
    return Estimate(
        calls=sum(s.calls for s in steps),
        tokens_in=sum(s.tokens_in for s in steps),
        tokens_out=sum(s.tokens_out for s in steps),
        cost=sum(s.cost or 0 for s in steps),
        steps=steps,
        unpriced=unpriced,
        assumptions=assumptions,
    )
