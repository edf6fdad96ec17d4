"""The one estimate of a run before (and while) it runs: calls, tokens and dollars.

    estimate(spec, inputs, endpoints=None)  # endpoints: one per step, with .model and .prices
        -> Estimate(calls=..., tokens_in=..., tokens_out=..., cost_micro=..., steps=[...])
    count(spec, inputs) -> [StepCount(calls=..., made=..., per_task=..., label=..., note=...)]

`count` is the call table (how many tasks each step runs and passes on, in the
words of the pipeline's keys); `estimate` adds tokens and, with endpoints, cost.
The launch page, the command line and the run page's projection all read these:
nothing else counts fan-out.

How a list is counted: the number the prompt asks for ("List eleven subtopics",
"5 variations"; numbers inside `{{ }}` and `{% %}` are not the prompt's), times
the size of a list it walks through when it asks for something "for each" item of
it; else DEFAULT_ITEMS, said in the result. Reply sizes are typical ones
(REPLY_TOKENS), said in `Estimate.reply_sizes`.

Pure: the caller resolves which endpoint (and prices) each step uses
(`runner.engine.lifecycle.estimate_run` does it as a launch would).
"""

import json
import re
from dataclasses import dataclass, field

from . import templating
from .money import fmt_dollars, price_for, priced_cost
from .schema import PipelineSpec

CHARS_PER_TOKEN = 4  # a fair average for English prose in every provider's tokenizer
CALL_FRAMING = 7  # tokens a chat API adds around one user message and its reply
MESSAGE_FRAMING = 4  # and for each further message (the system prompt)
DEFAULT_ITEMS = 5  # items a list is assumed to hold when its prompt names no number
MAX_ITEMS = 100  # a bigger number in a prompt is not a count of items ("in 500 words")
INPUT_RENDERED = 200  # the first step's prompt is rendered for this many inputs, then scaled
UNKNOWN_CHARS = 50  # a variable whose size nothing tells

# Typical reply sizes, in tokens (what a chat model writes when asked so).
LIST_ITEM_TOKENS = 15  # one item of a JSON list: a phrase of a few words, or a short question
LIST_FRAMING_TOKENS = 4  # the brackets around it
SHORT_TEXT_TOKENS = 25  # a reply asked to be one question, sentence, title or line (~20 words)
TEXT_TOKENS = 150  # any other text reply: a paragraph (about 110 words)
OBJECT_TOKENS = 150  # a JSON object
SCORE_TOKENS = 6  # one score of a judge's verdict: `"accuracy": 4,`
RATIONALE_TOKENS = 35  # the verdict's rationale: one or two sentences
REPLY_SIZES = {
    "list": f"a list item ~{LIST_ITEM_TOKENS} tokens",
    "short": f"a one-line reply ~{SHORT_TEXT_TOKENS} tokens",
    "text": f"a text reply ~{TEXT_TOKENS} tokens",
    "object": f"a JSON object ~{OBJECT_TOKENS} tokens",
    "verdict": f"a judge's verdict: ~{SCORE_TOKENS} tokens a score, a rationale ~{RATIONALE_TOKENS}",
}

NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20,
}  # fmt: skip
_TEMPLATE_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_NUMBER_RE = re.compile(r"\b(\d{1,3}|" + "|".join(NUMBER_WORDS) + r")\b", re.I)
_EACH_RE = re.compile(r"\b(?:for|per|to|about|from|of|on)\s+each\b|\beach\s+of\b", re.I)
_SHORT_RE = re.compile(
    r"\b(?:one|a single|only the|only one|just the|just one)\s+(?:\w+\s+){0,2}?"
    r"(?:question|sentence|line|title|headline|name|word|phrase|tagline|label)s?\b"
    r"|\b(?:question|sentence|title|name|word|label) only\b",
    re.I,
)
LISTS = ("scatter", "split", "split_lines")  # callbacks that make one task per item of a reply
POOLS = ("aggregate", "flatten")  # callbacks that make one task of many replies


def items_asked(prompt):
    """(number of items the prompt asks for, True), or (DEFAULT_ITEMS, False) when it names none.

    Digits (1 to MAX_ITEMS) and the words two to twenty count; numbers inside
    `{{ }}`, `{% %}` and `{# #}` belong to the template, not the prompt."""
    for m in _NUMBER_RE.finditer(_TEMPLATE_RE.sub(" ", prompt or "")):
        word = m[1].lower()
        n = int(word) if word.isdigit() else NUMBER_WORDS[word]
        if 1 <= n <= MAX_ITEMS:
            return n, True
    return DEFAULT_ITEMS, False


def plural(key, count):
    """A key in words, for `count` of it: "subtopic" -> "subtopics", "summary" -> "summaries";
    one of a plural key: "versions" -> "version"; a last word of one letter stays as it is:
    "response_a" -> "responses a"."""
    words = key.replace("_", " ")
    head, _, tail = words.rpartition(" ")
    if head and len(tail) == 1:
        return f"{plural(head, count)} {tail}"
    if count == 1:
        return _singular(words)
    if words.endswith("s"):
        return words
    if words.endswith("y") and words[-2:-1] not in ("a", "e", "i", "o", "u"):
        return words[:-1] + "ies"
    if words.endswith(("x", "ch", "sh")):
        return words + "es"
    return words + "s"


def _singular(words):
    if words.endswith(("ss", "is", "us")) or not words.endswith("s"):
        return words
    if words.endswith("ies"):
        return words[:-3] + "y"
    if words.endswith(("xes", "ches", "shes")):
        return words[:-2]
    return words[:-1]


# -- counting ----------------------------------------------------------------------------


@dataclass
class StepCount:
    number: int  # 1-based, as people count steps
    name: str
    calls: int  # tasks the step runs (one call each, retries aside)
    made: int  # tasks (or, for the last step, records) it passes on
    label: str  # what it makes, in words: "subtopics"
    note: str = ""  # how `made` was counted, for people
    per_task: float | None = 1.0  # children per task; None for many -> one (aggregate, flatten)
    items: int | None = None  # items in one reply, for a step that writes a list
    guessed: bool = False  # `items` is DEFAULT_ITEMS: the prompt names no number
    prompts: int = 1  # calls one task makes: a workflow's prompts (a loop: its bound)
    upto: bool = False  # `prompts` is an upper bound (a loop may end sooner)
    key: str = ""  # the key `label` says in words, to say it for another count

    def of(self, n):
        """`n` of what the step makes, in words: "5 subtopics", "1 question"."""
        return f"{n:,} {plural(self.key, n)}"


def _list_walked(step, lengths):
    """Items of the list a "for each" prompt walks through (None if it walks none)."""
    if not _EACH_RE.search(_TEMPLATE_RE.sub(" ", step.prompt)):
        return None
    try:
        names = templating.variables(step.prompt)
    except templating.TemplateError:
        return None
    known = [lengths[n] for n in sorted(names) if n in lengths]
    return max(known) if known else None


def count(spec, inputs):
    """How many calls each step makes for these inputs, and what each passes on.

    `inputs` is the run's list of input dicts (their values only matter to an
    aggregate grouped by an input key)."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.model_validate(spec)
    inputs = list(inputs or [])
    calls = len(inputs)
    lengths = {}  # key -> items in that key's list, for a list a later prompt walks through
    distinct = {}  # key -> distinct values among the tasks that carry it
    keys = spec.first_step_keys()
    out = []
    for i, step in enumerate(spec.steps):
        cb = step.callback
        items, found = None, True
        if step.workflow is not None and str(step.output_format) == "json_list":
            items, found = step.workflow.items_returned()
        elif str(step.output_format) == "json_list" or cb.type in LISTS:
            items, found = items_asked(step.prompt)
            walked = _list_walked(step, lengths)
            if walked is not None:
                items, found = (items if found else 1) * walked, True
        per, note = 1.0, ""
        if cb.type in LISTS:
            per = float(items)
            how = "the number in the prompt" if found else "a guess: the prompt names no number"
            note = f"about {items} per reply, {how}"
            made = calls * items
        elif cb.type == "broadcast":
            per = float(cb.n or 1)
            made = calls * (cb.n or 1)
            note = f"{cb.n or 1} copies of each"
        elif cb.type == "aggregate":
            per = None
            if cb.group_by:
                if cb.group_by not in distinct and cb.group_by in keys:
                    distinct[cb.group_by] = len(
                        {
                            json.dumps(r.get(cb.group_by), sort_keys=True, default=str)
                            for r in inputs
                        }
                    )
                made = min(distinct.get(cb.group_by, calls), calls)
                note = f"one list per {cb.group_by}"
            else:
                made = min(1, calls)
                note = "all results in one list"
        elif cb.type == "flatten":
            per = None
            made = min(1, calls)
            note = "all lists joined into one"
        elif cb.type == "python":
            made = calls
            note = "a Python callback decides; counted as one per reply"
        else:
            made = calls
        result = step.result_keys()
        for key in result:
            distinct[key] = made
            lengths.pop(key, None)
            if cb.type == "flatten":
                lengths[key] = calls * (items or 1)
            elif cb.type == "aggregate":
                lengths[key] = calls // max(made, 1)
            elif cb.type not in LISTS and items is not None:
                lengths[key] = items  # a list kept whole
        key = result[0] if result else step.output_key
        prompts, upto = step.workflow.calls_bound() if step.workflow else (1, False)
        if prompts > 1:
            each = f"{'up to ' if upto else ''}{prompts} prompts each"
            note = f"{each}; {note}" if note else each
        out.append(
            StepCount(
                i + 1, step.name, calls * prompts, made, _label(key, made, cb.type), note, per, items,
                guessed=not found, prompts=prompts, upto=upto, key=key,
            )
        )  # fmt: skip
        calls = made
    return out


def _label(key, made, callback):
    """What a step makes, in words: "subtopics"; many made into one: "list of subtopics"."""
    if callback in POOLS:
        return f"list{'' if made == 1 else 's'} of {plural(key, 2)}"
    return plural(key, made)


# -- tokens and cost ---------------------------------------------------------------------


@dataclass
class StepEstimate(StepCount):
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro: int | None = None  # None when the model has no price


@dataclass
class Estimate:
    inputs: int
    input_label: str
    steps: list[StepEstimate] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)  # models with no price set
    assumptions: list[str] = field(default_factory=list)  # guesses this spec needed
    reply_sizes: list[str] = field(default_factory=list)  # the typical sizes it counted with

    @property
    def calls(self):
        return sum(s.calls for s in self.steps)

    total = calls

    @property
    def tokens_in(self):
        return sum(s.tokens_in for s in self.steps)

    @property
    def tokens_out(self):
        return sum(s.tokens_out for s in self.steps)

    @property
    def cost_micro(self):
        """Micro-dollars, for the steps whose model has a price."""
        return sum(s.cost_micro or 0 for s in self.steps)

    @property
    def cost_text(self):
        return fmt_dollars(self.cost_micro)

    @property
    def priced(self):
        """True when some step's model has a price."""
        return any(s.cost_micro is not None for s in self.steps)

    @property
    def complete(self):
        """True when every step's model has a price."""
        return not self.unpriced

    @property
    def approximate(self):
        """True when a count depends on how many items a model writes."""
        return any(s.items is not None or s.note.startswith("a Python") for s in self.steps)

    @property
    def chain(self):
        """The counts in words: 20 topics → 100 subtopics → 100 questions → 100 answers."""
        return chain(self.inputs, self.input_label, self.steps)

    def summary(self):
        text = (
            f"about {self.calls:,} calls, {_k(self.tokens_in)} tokens in and "
            f"{_k(self.tokens_out)} out"
        )
        if self.unpriced and not self.priced:
            text += "; no price is set for " + ", ".join(self.unpriced)
        elif not self.unpriced and not self.cost_micro:
            text += ", free"
        else:
            text += f", about {self.cost_text}"
            if self.unpriced:
                text += " (not counting " + ", ".join(self.unpriced) + ": no price set)"
        notes = self.assumptions + self.reply_sizes
        if notes:
            text += " (" + "; ".join(notes) + ")"
        return text


def input_label(spec, n):
    """What `n` inputs of this spec are, in words: "topics" (one key), else "inputs"."""
    keys = spec.first_step_keys()
    return plural(keys[0], n) if len(keys) == 1 else plural("input", n)


def chain(inputs, label, steps):
    """Counts in words, from the inputs through what each step makes (StepCounts)."""
    return " → ".join([f"{inputs:,} {label}"] + [f"{s.made:,} {s.label}" for s in steps])


def _k(n):
    return f"{n / 1000:,.1f}k" if n >= 10_000 else f"{n:,}"


def _reply(step, counted):
    """(tokens of one reply, which REPLY_SIZES it used)."""
    fmt = str(step.output_format)
    if step.judge is not None:
        scores = len(step.judge.criteria) * (2 if step.judge.pair else 1)
        tokens, kind = scores * SCORE_TOKENS + RATIONALE_TOKENS + LIST_FRAMING_TOKENS, "verdict"
    elif fmt == "json_list":
        tokens, kind = (
            (counted.items or DEFAULT_ITEMS) * LIST_ITEM_TOKENS + LIST_FRAMING_TOKENS,
            "list",
        )
    elif fmt == "json_object":
        tokens, kind = OBJECT_TOKENS, "object"
    elif step.callback.type in LISTS:  # text split into items
        tokens, kind = (counted.items or DEFAULT_ITEMS) * LIST_ITEM_TOKENS, "list"
    elif _SHORT_RE.search(_TEMPLATE_RE.sub(" ", step.prompt)):
        tokens, kind = SHORT_TEXT_TOKENS, "short"
    else:
        tokens, kind = TEXT_TOKENS, "text"
    if step.params.max_tokens:
        tokens = min(tokens, step.params.max_tokens)
    return tokens, kind


def _task_reply(task, params):
    """Tokens of one reply of a workflow's prompt."""
    fmt = str(task.output_format)
    if fmt == "json_list":
        tokens = items_asked(task.prompt)[0] * LIST_ITEM_TOKENS + LIST_FRAMING_TOKENS
    elif fmt == "json_object":
        tokens = OBJECT_TOKENS
    elif _SHORT_RE.search(_TEMPLATE_RE.sub(" ", task.prompt)):
        tokens = SHORT_TEXT_TOKENS
    else:
        tokens = TEXT_TOKENS
    return min(tokens, params.max_tokens) if params.max_tokens else tokens


def _workflow_task(step, sizes):
    """(characters of the prompts one task of a workflow step sends, tokens of its replies,
    characters of each memory key at its end).

    Walks the way every prompt answering as asked takes (each prompt once when that way
    depends on the replies), sizing memory as it fills: a list read whole grows with
    every push, so the tenth turn of a dialogue carries the nine before it."""
    flow = step.workflow
    run = flow.dry_run()
    path = run[0] if run else [t.id for t in flow.tasks]
    memory = {}  # key -> (characters, items)
    chars = replies = 0
    for task_id in path:
        task = flow.task(task_id)
        seen = {**sizes, **{k: c for k, (c, _) in memory.items()}}
        for inp in task.inputs:
            held, items = memory.get(inp.key, (sizes.get(inp.key, 0), 1))
            if inp.kind == "string":
                seen[inp.var] = len(inp.value or "")
            elif inp.kind == "size":
                seen[inp.var] = 2
            elif inp.kind in ("peek", "pop"):
                seen[inp.var] = held / max(items, 1)
            else:
                seen[inp.var] = held
        chars += _template_chars(task.prompt, seen) + _template_chars(task.system, seen)
        reply = _task_reply(task, step.params)
        replies += reply
        for out in task.outputs:
            if out.kind == "push":
                held, items = memory.get(out.key, (0, 0))
                memory[out.key] = (held + reply * CHARS_PER_TOKEN, items + 1)
            else:
                memory[out.key] = (reply * CHARS_PER_TOKEN, 1)
    return chars, replies, {k: c for k, (c, _) in memory.items()}


def _template_chars(source, sizes):
    """Characters of a template with each variable replaced by its assumed size."""
    if not source:
        return 0
    try:
        names = templating.variables(source)
    except templating.TemplateError:
        names = set()
    return len(_TEMPLATE_RE.sub("", source)) + sum(sizes.get(n, UNKNOWN_CHARS) for n in names)


def _first_prompt_chars(step, inputs, sizes):
    """Characters of the first step's prompts, rendered for (a sample of) the inputs."""
    sample = inputs[:INPUT_RENDERED]
    chars = 0
    for row in sample:
        for source in (step.prompt, step.system):
            if not source:
                continue
            try:
                chars += len(templating.render(source, row))
            except templating.TemplateError:
                chars += _template_chars(source, sizes)
    return chars * len(inputs) / len(sample)


def estimate(spec, inputs, endpoints=None):
    """Estimate a run's calls, tokens and (with `endpoints`) cost before it starts.

    `spec` is a PipelineSpec (or its dict), `inputs` the run's list of input dicts,
    `endpoints` one per step (anything with `.model` and `.prices`) or None for
    counts and tokens only. The result says which guesses it made, which reply
    sizes it assumed and which models have no price."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.model_validate(spec)
    inputs = list(inputs or [])
    est = Estimate(len(inputs), input_label(spec, len(inputs)))
    sizes = {}  # key -> characters of its value in a task's context
    for row in inputs:
        for k, v in row.items():
            sizes[k] = sizes.get(k, 0) + len(str(v)) / len(inputs)
    kinds = set()
    for i, counted in enumerate(count(spec, inputs)):
        step = spec.steps[i]
        ep = endpoints[i] if endpoints else None
        calls = counted.calls
        returned = {}  # a workflow's return keys: characters each
        if step.workflow is not None:
            tasks = calls / max(counted.prompts, 1)
            per_chars, per_reply, memory = _workflow_task(step, sizes)
            chars, tokens_out = tasks * per_chars, round(tasks * per_reply)
            returned = {k: memory.get(k, UNKNOWN_CHARS) for k in step.workflow.return_value}
            reply, kind = round(sum(returned.values()) / CHARS_PER_TOKEN), "text"
        else:
            if i == 0 and inputs:
                chars = _first_prompt_chars(step, inputs, sizes)
            else:
                chars = calls * (
                    _template_chars(step.prompt, sizes) + _template_chars(step.system, sizes)
                )
            reply, kind = _reply(step, counted)
            tokens_out = calls * reply
        framing = CALL_FRAMING + (MESSAGE_FRAMING if step.system else 0)
        tokens_in = round(chars / CHARS_PER_TOKEN) + calls * framing
        kinds.add(kind)
        cost = None
        price = price_for(ep.prices, ep.model) if ep else None
        if price is not None:
            cost = priced_cost(price, tokens_in, tokens_out)
        elif ep and ep.model not in est.unpriced:
            est.unpriced.append(ep.model)
        if counted.guessed and counted.items is not None:
            est.assumptions.append(f"'{step.name}' assumed to make {counted.items} items per task")
        est.steps.append(
            StepEstimate(
                **vars(counted),
                model=ep.model if ep else "",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_micro=cost,
            )
        )
        # what the next steps see of this step's reply
        reply_chars = reply * CHARS_PER_TOKEN
        for key in step.result_keys():
            if step.returns_object and step.callback.type == "default":
                sizes[key] = returned.get(key, reply_chars)
            elif step.callback.type in LISTS:
                sizes[key] = reply_chars / (counted.items or 1)
            elif step.callback.type in POOLS:
                sizes[key] = reply_chars * calls / max(counted.made, 1)
            else:
                sizes[key] = reply_chars
        if step.output_key not in step.result_keys():
            sizes.setdefault(step.output_key, reply_chars)
    est.reply_sizes = [REPLY_SIZES[k] for k in REPLY_SIZES if k in kinds]
    return est
