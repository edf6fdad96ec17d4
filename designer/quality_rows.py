"""A step's quality as rows of the step form, the rows back into specs, and their words.

Repeated rows post in page order (read with getlist) and every row posts every field,
so the columns line up, the way the workflow's prompts do (designer/workflow_rows.py):

- a judge's criteria: `crit-key`, `crit-description`, `crit-scale`, and what each level
  means: `crit-level_1` ... `crit-level_5`, `crit-level_pass`, `crit-level_fail` (the
  levels of the other scale post too, hidden, so switching the scale loses nothing);
- "Keep only" conditions: `keep-field`, `keep-op`, `keep-value`.

A row left empty is skipped. What is wrong with a row stays beside it (`row["errors"]`);
what is wrong with the rows as a whole is in `errors`. The words a step card shows for
a judge, its conditions and its duplicates are here too.
"""

from pydantic import ValidationError

from runner.spec.quality import FAIL, FILTER_OPS, OP_WORDS, PASS, Criterion, FilterSpec

from .workflow_rows import posted_list

MAX_ROWS = 10  # criteria of a judge, conditions of a step (as in the spec)
LEVELS = {"1-5": ("1", "2", "3", "4", "5"), "pass_fail": (PASS, FAIL)}
ALL_LEVELS = (*LEVELS["1-5"], *LEVELS["pass_fail"])
SCALE_CHOICES = [("1-5", "from 1 to 5"), ("pass_fail", "pass or fail")]
OP_CHOICES = [(op, OP_WORDS[op]) for op in FILTER_OPS]
NUMBER_OPS = (">=", ">", "<=", "<", "min_length", "max_length")
CRITERION_COLUMNS = ("key", "description", "scale", *(f"level_{lv}" for lv in ALL_LEVELS))
KEEP_COLUMNS = ("field", "op", "value")
PLACEHOLDER_MARKS = ("{{", "{%", "{#")


def error_words(exc):
    """A pydantic error's sentences without pydantic's prefix, each with a capital letter."""
    out = []
    for err in exc.errors():
        text = err["msg"].removeprefix("Value error, ").strip()
        out.append(text[:1].upper() + text[1:] + ("" if text.endswith(".") else "."))
    return out


def has_placeholder(text):
    return any(mark in text for mark in PLACEHOLDER_MARKS)


PLACEHOLDER_WORDS = (
    "Leave out {{ }}, {% %} and {# #} here: the judge is given the fields it reads itself."
)


def columns_of(rows, prefix, columns):
    """Rows (dicts) as the posted values of their columns (dict of lists)."""
    return {prefix + c: [str(row.get(c, "")) for row in rows] for c in columns}


class Rows:
    """Repeated rows of a posted form, one dict per row; `typed`: the columns people type."""

    prefix = ""
    columns = ()
    typed = ()

    def __init__(self, data):
        values = {c: posted_list(data, self.prefix + c) for c in self.columns}
        size = max((len(v) for v in values.values()), default=0)
        self.rows = [
            {c: (values[c][i] if i < len(values[c]) else "") for c in self.columns}
            for i in range(size)
        ]
        for n, row in enumerate(self.rows, 1):
            row["n"], row["errors"] = n, []
        self.errors = []

    def blank(self, row):
        return not any(row[c].strip() for c in self.typed)

    def add_error(self, i, sentence):
        if sentence not in self.rows[i]["errors"]:
            self.rows[i]["errors"].append(sentence)

    def row_errors(self):
        return [e for row in self.rows for e in row["errors"]]

    def all_errors(self):
        return [*self.row_errors(), *self.errors]

    def row_of(self, column, value):
        """The index of the first row whose `column` is `value`, or None."""
        for i, row in enumerate(self.rows):
            if row[column].strip() == value:
                return i
        return None

    def _too_many(self, built, what):
        if len(built) > MAX_ROWS:
            self.errors.append(f"At most {MAX_ROWS} {what}: remove {len(built) - MAX_ROWS}.")


# -- a judge's criteria -----------------------------------------------------------------


def criteria_data(judge, prefix="crit-"):
    """The posted values of a judge's criteria rows."""
    rows = []
    for c in judge.criteria if judge else []:
        levels = {f"level_{lv}": c.levels.get(lv, "") for lv in ALL_LEVELS}
        rows.append({"key": c.key, "description": c.description, "scale": c.scale, **levels})
    return columns_of(rows, prefix, CRITERION_COLUMNS)


def _level_label(level):
    return f"{level.capitalize()} means" if level in (PASS, FAIL) else f"{level} means"


class CriteriaRows(Rows):
    prefix = "crit-"
    columns = CRITERION_COLUMNS
    typed = ("key", "description", *(f"level_{lv}" for lv in ALL_LEVELS))
    scale_choices = SCALE_CHOICES

    def build(self):
        """The criteria the rows make (their mistakes in `row["errors"]` and `errors`)."""
        out, seen = [], {}
        for i, row in enumerate(self.rows):
            if self.blank(row):
                continue
            criterion = self._criterion(i, row)
            if criterion is None:
                continue
            if criterion.key in seen:
                self.add_error(
                    i, f"Criterion {seen[criterion.key] + 1} has this name too: rename one."
                )
                continue
            seen[criterion.key] = i
            out.append(criterion)
        if not out and not self.row_errors():
            self.errors.append(
                "Add at least one criterion: what the judge scores, for example helpfulness."
            )
        self._too_many(out, "criteria")
        return out

    def _criterion(self, i, row):
        key, scale = row["key"].strip(), row["scale"]
        if not key:
            self.add_error(i, "Give the criterion a short name, for example helpfulness.")
            return None
        if scale not in LEVELS:
            self.add_error(i, "The page sent a scale it does not know; reload it.")
            return None
        levels = {lv: row[f"level_{lv}"].strip() for lv in LEVELS[scale]}
        texts = [row["description"], *levels.values()]
        if any(has_placeholder(t) for t in texts):
            self.add_error(i, PLACEHOLDER_WORDS)
            return None
        try:
            return Criterion(
                key=key,
                description=row["description"].strip(),
                scale=scale,
                levels={lv: text for lv, text in levels.items() if text},
            )
        except ValidationError as exc:
            for sentence in error_words(exc):
                self.add_error(i, sentence)
            return None

    def view_rows(self):
        """The rows for the page (one empty row when there is none yet)."""
        return [self._view(row) for row in self.rows or [self.empty_row()]]

    def template_row(self):
        """The row the page copies when people add a criterion."""
        return self._view(self.empty_row())

    def empty_row(self):
        return {**{c: "" for c in self.columns}, "scale": "1-5", "n": 1, "errors": []}

    def _view(self, row):
        """A row with its levels grouped by scale (the other scale's group hidden)."""
        scale = row["scale"] if row["scale"] in LEVELS else "1-5"
        groups = []
        for name, levels in LEVELS.items():
            inputs = [
                {"name": f"{self.prefix}level_{lv}", "label": _level_label(lv),
                 "value": row[f"level_{lv}"]}
                for lv in levels
            ]  # fmt: skip
            groups.append({"scale": name, "hidden": name != scale, "levels": inputs})
        return {**row, "scale": scale, "groups": groups}


# -- "keep only" conditions ----------------------------------------------------------------


def keep_data(keep, prefix="keep-"):
    """The posted values of a step's "keep only" rows."""
    rows = [{"field": f.field, "op": f.op, "value": f.value} for f in keep]
    return columns_of(rows, prefix, KEEP_COLUMNS)


class KeepRows(Rows):
    prefix = "keep-"
    columns = KEEP_COLUMNS
    typed = ("field", "value")
    op_choices = OP_CHOICES

    def build(self):
        """The filters the rows make (their mistakes in `row["errors"]` and `errors`)."""
        out = []
        for i, row in enumerate(self.rows):
            if not self.blank(row):
                f = self._filter(i, row)
                if f is not None:
                    out.append(f)
        self._too_many(out, "conditions")
        return out

    def _filter(self, i, row):
        field, op, value = row["field"].strip(), row["op"], row["value"].strip()
        if not field:
            self.add_error(i, "Choose the field to check.")
            return None
        if op not in FILTER_OPS:
            self.add_error(i, "The page sent a condition it does not know; reload it.")
            return None
        if op in NUMBER_OPS and not _is_number(value):
            self.add_error(i, f"“{OP_WORDS[op]}” needs a number, for example 4 (not “{value}”).")
            return None
        try:
            return FilterSpec(field=field, op=op, value=value)
        except ValidationError as exc:
            for sentence in error_words(exc):
                self.add_error(i, sentence)
            return None

    def template_row(self):
        return {"field": "", "op": ">=", "value": "", "n": "", "errors": []}


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- the words of a step card ----------------------------------------------------------------


def _capital(text):
    return text[:1].upper() + text[1:]


def judge_words(judge):
    """“Judges question, answer on 2 criteria”."""
    n = len(judge.criteria)
    parts = []
    if judge.fields:
        parts.append("judges " + ", ".join(judge.fields))
    if judge.pair:
        parts.append(f"compares {judge.pair[0]} (A) with {judge.pair[1]} (B)")
    return _capital(" and ".join(parts)) + f" on {n} criteri{'on' if n == 1 else 'a'}"


def condition_words(f):
    """“score at least 4”, “answer at least 20 characters long”, “verdict equal to “pass””."""
    if f.op in ("min_length", "max_length"):
        return f"{f.field} {'at least' if f.op == 'min_length' else 'at most'} {f.value} characters long"
    value = f.value if _is_number(f.value) else f"“{f.value}”"
    return f"{f.field} {OP_WORDS[f.op]} {value}"


def keep_words(keep):
    """“Keeps only: score at least 4 and answer containing “because””."""
    return "Keeps only: " + " and ".join(condition_words(f) for f in keep)


def dedup_words(dedup):
    """“Drops duplicates of question (near, 85% similar)”."""
    how = f"near, {round(dedup.threshold * 100, 1):g}% similar" if dedup.near else "exact copies"
    return f"Drops duplicates of {dedup.field} ({how})"


def quality_words(step):
    """What a step card says of the step's conditions and duplicates, one line each."""
    out = []
    if step.keep:
        out.append(keep_words(step.keep))
    if step.dedup is not None:
        out.append(dedup_words(step.dedup))
    return out
