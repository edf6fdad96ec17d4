"""The step form with a step's quality: a judge's rubric, "Keep only", "Drop duplicates".

`QualityStepForm` adds to the step form (with its workflow, designer/workflow_form.py):

- a third kind of step, a judge (mode "judge"): the fields it reads, chosen from those
  the step's tasks carry; optionally two fields compared as response A and B;
  instructions; criteria rows (`quality_rows.CriteriaRows`); and its own model;
- on any step, "Keep only" condition rows (`quality_rows.KeepRows`) and "Drop
  duplicates of <field>" (near duplicates too, and how similar is near).

What it builds is the StepSpec `runner.spec.builder` makes for the same choices. The
editor uses it as its step form, and tells it the fields known before and after the
step (`Known`), for its pick-lists.
"""

from dataclasses import dataclass

from django import forms
from pydantic import ValidationError

from runner.spec import ModelParams, StepSpec, templating
from runner.spec.quality import Criterion, DedupSpec, JudgeSpec

from .quality_rows import (
    PLACEHOLDER_WORDS,
    CriteriaRows,
    KeepRows,
    criteria_data,
    error_words,
    has_placeholder,
    keep_data,
)
from .step_forms import plain_words
from .workflow_form import MODE_CHOICES, WorkflowStepForm
from .workflow_rows import initial_data, posted_list

JUDGE_MODE = ("judge", "A judge: it scores each record against a rubric")
JUDGE_KEYS = ("rationale_key", "preferred_key", "chosen_key", "rejected_key")
DEFAULT_THRESHOLD = 0.85
THRESHOLD_WORDS = "The similarity is a number from 0.5 to 1 (1: the same words); try 0.85."


@dataclass(frozen=True)
class Known:
    """The fields a step's tasks carry (`before`) and its results have (`after`), in order."""

    before: tuple = ()
    after: tuple = ()


class RowsField(forms.Field):
    """Stands for a section of repeated rows (posted under their own names): holds its errors."""

    widget = forms.HiddenInput

    def __init__(self):
        super().__init__(required=False)


def quality_data(step, prefix="step"):
    """The posted values of a step's quality (and, for a judge, its rubric)."""
    d = step.dedup
    data = {
        f"{prefix}-dedup": d.field if d else "",
        f"{prefix}-dedup_near": d.near if d else True,
        f"{prefix}-dedup_threshold": f"{d.threshold:g}" if d else f"{DEFAULT_THRESHOLD:g}",
        **keep_data(step.keep),
    }
    judge = step.judge
    if judge is not None:
        pair = judge.pair or ["", ""]
        data.update(
            {
                f"{prefix}-mode": "judge",
                f"{prefix}-judge": list(judge.fields),
                f"{prefix}-pair_a": pair[0],
                f"{prefix}-pair_b": pair[1],
                f"{prefix}-instructions": judge.instructions,
                **criteria_data(judge),
                **initial_data(step),
            }
        )
    return data


def _plain(data):
    return data.dict() if hasattr(data, "dict") else dict(data)


def _distinct(names):
    return list(dict.fromkeys(n for n in names if n))


class QualityStepForm(WorkflowStepForm):
    """The step form, with a judge's rubric and, on any step, what goes on to the next."""

    mode = forms.ChoiceField(
        label="This step is made of",
        choices=[*MODE_CHOICES, JUDGE_MODE],
        required=False,
        initial="one",
    )
    judge = forms.MultipleChoiceField(
        label="Fields to judge",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The judge reads these fields of each record.",
    )
    pair_a = forms.ChoiceField(label="Compare as response A", required=False)
    pair_b = forms.ChoiceField(label="with response B", required=False)
    instructions = forms.CharField(
        label="Instructions for the judge",
        required=False,
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional: what the judge should look out for.",
    )
    criteria = RowsField()
    keep = RowsField()
    dedup = forms.CharField(
        label="Drop duplicates of",
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"list": "result-fields", "placeholder": "a field"}),
        help_text="Empty: duplicates go on. Case and spaces are ignored.",
    )
    dedup_near = forms.BooleanField(label="Near duplicates too", required=False)
    dedup_threshold = forms.FloatField(
        label="How similar counts as near",
        required=False,
        min_value=0.5,
        max_value=1,
        help_text="From 0.5 to 1 (1: the same words).",
        error_messages={
            "min_value": THRESHOLD_WORDS,
            "max_value": THRESHOLD_WORDS,
            "invalid": THRESHOLD_WORDS,
        },
    )

    def __init__(self, data=None, *args, providers=(), step=None, fields=None, **kwargs):
        if data is not None and f"{self.prefix}-mode" not in data and step is not None:
            # built from a saved step (for_step), or posted by a page without the choice
            data = {**_plain(data), **quality_data(step, self.prefix)}
        super().__init__(data, *args, providers=providers, step=step, **kwargs)
        self.is_judge = self.data.get(f"{self.prefix}-mode") == "judge"
        self.known = fields or Known()
        self.criteria_rows = CriteriaRows(self.data)
        self.keep_rows = KeepRows(self.data)
        self._field_choices()
        if self.is_judge:
            self.fields["prompt"].required = False
            self.fields["output_key"].required = False
        self.judge_spec, self.keep_specs, self.dedup_spec = None, [], None

    def _field_choices(self):
        """The fields to choose from: those chosen (kept, even when unknown), then the others."""
        p = self.prefix
        chosen = _distinct(posted_list(self.data, f"{p}-judge"))
        names = _distinct([*chosen, *self.known.before])
        self.fields["judge"].choices = [(n, n) for n in names]
        pair = [self.data.get(f"{p}-pair_{side}") or "" for side in ("a", "b")]
        paired = _distinct([*self.known.before, *pair])
        for side in ("a", "b"):
            self.fields[f"pair_{side}"].choices = [("", "(no comparison)")] + [
                (n, n) for n in paired
            ]

    # -- checking what was posted -------------------------------------------------------

    def clean(self):
        self.keep_specs = self._rows("keep", self.keep_rows)
        self.dedup_spec = self._dedup(self.cleaned_data)
        if not self.is_judge:
            return super().clean()
        data = forms.Form.clean(self)
        self.judge_spec = self._judge(data)
        if self.errors:
            return data
        try:
            self.step = self._step_spec(data)
        except ValidationError as exc:
            for sentence in error_words(exc):
                self.add_error(None, sentence)
        return data

    def _rows(self, anchor, rows):
        built = rows.build()
        for sentence in rows.all_errors():
            self.add_error(anchor, sentence)
        return built

    def _dedup(self, data):
        field = (data.get("dedup") or "").strip()
        if not field or "dedup_threshold" in self.errors:
            return None
        threshold = data.get("dedup_threshold")
        try:
            return DedupSpec(
                field=field,
                near=bool(data.get("dedup_near")),
                threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
            )
        except ValidationError as exc:
            for sentence in error_words(exc):
                self.add_error("dedup", sentence)
            return None

    def _judge(self, data):
        fields = data.get("judge") or []
        a, b = data.get("pair_a") or "", data.get("pair_b") or ""
        if bool(a) != bool(b):
            self.add_error(
                "pair_b" if a else "pair_a", "Choose both responses, A and B, or neither."
            )
        elif a and a == b:
            self.add_error("pair_b", "Compare two different fields.")
        if not fields and not (a or b):
            self.add_error(
                "judge",
                "Tick at least one field for the judge to read, or compare two fields as A and B.",
            )
        if has_placeholder(data.get("instructions") or ""):
            self.add_error("instructions", PLACEHOLDER_WORDS)
        criteria = self._rows("criteria", self.criteria_rows)
        if self.errors:
            return None
        prev = self.previous.judge if self.previous is not None else None
        keys = {k: getattr(prev, k) for k in JUDGE_KEYS} if prev is not None else {}
        try:
            return JudgeSpec(
                fields=fields,
                criteria=criteria,
                pair=[a, b] if a else None,
                instructions=data.get("instructions") or "",
                **keys,
            )
        except ValidationError as exc:
            for sentence in error_words(exc):
                self.add_error(None, sentence)
            return None

    def _step_data(self, data):
        if self.is_judge:
            key = (data.get("output_key") or "").strip() or "judge"
            one = {**data, "prompt": "", "system": "", "output_format": "text", "output_key": key}
            out = {**super()._step_data(one), "judge": self.judge_spec.model_dump(mode="json")}
        else:
            out = {**super()._step_data(data), "judge": None}
        dedup = self.dedup_spec.model_dump(mode="json") if self.dedup_spec else None
        return {**out, "keep": [f.model_dump(mode="json") for f in self.keep_specs], "dedup": dedup}

    # -- the draft's problems beside their fields --------------------------------------------

    def show_problems(self, problems):
        """The step's problems beside their fields; a condition's beside its row."""
        rest = [p for p in problems if not self._place(p, plain_words(p))]
        super().show_problems(rest)

    def _place(self, problem, sentence):
        """Put a problem beside the keep row or the A/B choice it names (False: neither)."""
        key = problem.params.get("key")
        if problem.code == "unknown_judge_field":
            sides = [s for s in ("a", "b") if key and key == self.cleaned_data.get(f"pair_{s}")]
            if not sides:
                return False  # one of the fields to judge: beside them
            field = f"pair_{sides[0]}"
        elif problem.code == "unknown_keep_field":
            i = self.keep_rows.row_of("field", key) if key else None
            if i is None:
                return False
            self.keep_rows.add_error(i, sentence)
            field = "keep"
        else:
            return False
        if sentence not in self.errors.get(field, []):
            self.add_error(field, sentence)
        return True

    # -- for the template ---------------------------------------------------------------

    def _section_errors(self, name, rows):
        """The errors of a rows section that no single row shows."""
        shown = rows.row_errors()
        return [e for e in self.errors.get(name, []) if e not in shown]

    def keep_errors(self):
        return self._section_errors("keep", self.keep_rows)

    def criteria_errors(self):
        return self._section_errors("criteria", self.criteria_rows)

    def result_fields(self):
        return list(self.known.after)


# -- what the editor asks of it ---------------------------------------------------------


def _fields_at(spec, index):
    """The fields tasks carry before step `index` (at the end: a record's), or None."""
    keys = [*spec.contexts(), spec.record_fields()][index]
    return None if keys is None else set(keys)


def _judged_fields(spec, index):
    """What a new judge at `index` reads: what the step before read and made, when known."""
    if index == 0:
        return (spec.first_step_keys() or ["topic"])[:1]
    prev, ctx = spec.steps[index - 1], _fields_at(spec, index) or set()
    try:
        read = sorted(k for k in prev.prompt_variables() if k in ctx)
    except templating.TemplateError:  # a broken prompt reads nothing
        read = []
    made = [k for k in prev.result_keys() if k in ctx and k not in read]
    return [*read, *made] or (spec.first_step_keys() or ["topic"])[:1]


def new_judge(spec, index, name, output_key, score_key):
    """A new judge step at `index`: one criterion over what the step before read and made."""
    criterion = Criterion(key=score_key, description="How good and correct it is")
    return StepSpec(
        name=name,
        judge=JudgeSpec(fields=_judged_fields(spec, index), criteria=[criterion]),
        output_key=output_key,
        params=ModelParams(temperature=0.0),  # as the builder's Judge
    )


def _in_order(keys, spec):
    """`keys` in the order the pipeline makes them (the rest sorted after)."""
    if keys is None:
        return ()
    made = [k for k in spec.record_fields() or [] if k in keys]
    return (*made, *sorted(set(keys) - set(made)))


def known_fields(spec, index):
    """The fields step `index`'s tasks carry, and those its results have."""
    before, after = _fields_at(spec, index), _fields_at(spec, index + 1)
    return Known(before=_in_order(before, spec), after=_in_order(after, spec))


__all__ = ["Known", "QualityStepForm", "known_fields", "new_judge", "quality_data"]
