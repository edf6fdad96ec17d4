"""Which records a review page shows, and in what order: the filters in its query string.

Every review view reads the same query parameters through `select(run, params)`, so
the selection made in the table is the one the one-record view walks and the one a
bulk action changes. The parameters, all optional:

- `flag`: kept (the default: the run's dataset), filtered, duplicate, near_duplicate,
  set_aside (all three), restored, or all
- `from`: a task's key: only the records made from that task (what a duplicate repeats)
- `status`, `rating`: the review, as before (unreviewed / accepted / rejected / edited;
  1-5 / rated / unrated)
- `q`, `step`: text, in every field or in one step's output
- `num_field`, `min`, `max`: a number field at least / at most (a judge's score)
- `len_field`, `min_len`, `max_len`: the length of a field, in characters
- `sort`: number_asc, number_desc, length_asc, length_desc (by the fields above);
  run order (seq) otherwise, and within equal values

Fields are read from the record as it is now (its edit, when it was edited). A bad
value is left out of the selection with a problem in plain words (`problems`); a bulk
action refuses to run on a selection with problems.
"""

import json
import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.db.models import Case, F, FloatField, Func, Q, QuerySet, When
from django.db.models.fields.json import KT
from django.db.models.functions import Length

from runner.export import record_keys
from runner.models import Record, Task
from runner.spec.checks import KEY_RE

from .assignments import narrow_to_mine

STATUSES = (Record.UNREVIEWED, Record.ACCEPTED, Record.REJECTED, "edited")
RATINGS = ("1", "2", "3", "4", "5", "rated", "unrated")
# flag value -> (what the choice reads as, which records)
SHOW = {
    "": ("kept records", Q(flag="")),
    Record.FILTERED: ("filtered out", Q(flag=Record.FILTERED)),
    Record.DUPLICATE: ("duplicates", Q(flag=Record.DUPLICATE)),
    Record.NEAR_DUPLICATE: ("near duplicates", Q(flag=Record.NEAR_DUPLICATE)),
    "set_aside": ("everything set aside", ~Q(flag="")),
    "restored": ("restored records", Q(restored=True)),
    "all": ("all records, kept or set aside", Q()),
}
SORTS = {
    "": "in run order",
    "number_asc": "number, lowest first",
    "number_desc": "number, highest first",
    "length_asc": "length, shortest first",
    "length_desc": "length, longest first",
}


class JSONNumber(Func):
    """A JSON column's field when it holds a number, else NULL (text never compares as one)."""

    output_field = FloatField()

    def __init__(self, column, key):
        self.key = key
        super().__init__(F(column))

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        path = f'$."{self.key}"'
        return (
            f"CASE WHEN json_type({sql}, %s) IN ('integer', 'real') "
            f"THEN json_extract({sql}, %s) END",
            [*params, path, *params, path],
        )

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"CASE WHEN jsonb_typeof({sql} -> %s) = 'number' "
            f"THEN ({sql} ->> %s)::double precision END",
            [*params, self.key, *params, self.key],
        )

    def as_sql(self, compiler, connection, **extra):
        raise NotImplementedError("number filters need SQLite or PostgreSQL")


def _number_of(column, key):
    return JSONNumber(column, key)


def _length_of(column, key):
    return Length(KT(f"{column}__{key}"))


def now_value(measure, key):
    """A field of the record as it is now: of its edit when it was edited."""
    return Case(
        When(edited__isnull=True, then=measure("data", key)), default=measure("edited", key)
    )


@dataclass(frozen=True)
class Measure:
    """A number read from each record, to filter on (at least / at most) and to sort by."""

    name: str  # the sort's prefix and the annotation's name
    field: str  # the query parameters: which field, at least, at most
    low: str
    high: str
    of: object  # (column, key) -> expression
    whole: bool  # lengths are whole numbers
    words: str  # "{field} at least 4" / "{field} at least 4 characters long"


NUMBER = Measure("number", "num_field", "min", "max", _number_of, False, "{key} {op} {value}")
LENGTH = Measure(
    "length",
    "len_field",
    "min_len",
    "max_len",
    _length_of,
    True,
    "{key} {op} {value} characters long",
)


@dataclass
class Selection:
    records: QuerySet
    filters: dict = field(default_factory=dict)  # what applied, as strings, for forms and links
    problems: list = field(default_factory=list)  # bad values, in plain words
    words: list = field(default_factory=list)  # what it selects, in plain words
    order: tuple | None = None  # (annotation, descending, expression) when sorted by a measure
    _fields: list | None = None

    @property
    def query(self):
        return querystring(self.filters)

    def fields(self, run):
        """The record fields a filter or sort may name (read once)."""
        if self._fields is None:
            self._fields = [k for k in record_keys(run) if KEY_RE.match(k)]
        return self._fields


def querystring(filters, **extra):
    items = {k: v for k, v in filters.items() if v}
    items.update({k: v for k, v in extra.items() if v not in (None, "")})
    return urlencode(items)


def select(run, params):
    """The run's records that `params` selects (not yet ordered: see `ordered`)."""
    sel = Selection(Record.objects.filter(run=run))
    for narrow in (narrow_to_mine, _by_flag, _by_origin, _by_status, _by_rating, _by_text):
        narrow(sel, run, params)
    sel.filters["sort"] = _sort_of(sel, params)
    for m in (NUMBER, LENGTH):
        _by_measure(sel, run, params, m)
    return sel


def _choice(sel, params, name, choices, label):
    value = params.get(name, "")
    if value in choices:
        return value
    sel.problems.append(
        f"'{value[:50]}' is not a choice for {label}: pick one from the list; it was left out."
    )
    return ""


def _by_flag(sel, run, params):
    flag = _choice(sel, params, "flag", SHOW, "Show")
    words, cond = SHOW[flag]
    sel.records = sel.records.filter(cond)
    sel.filters["flag"] = flag
    sel.words.append(words)


def _by_origin(sel, run, params):
    """Records made from one task (those of a duplicate's original), or that one record."""
    key = params.get("from", "")[:300]
    if not key:
        return
    task = Task.objects.filter(run=run, key=key).only("seq").first()
    if task is not None:
        sel.records = sel.records.filter(seq__startswith=task.seq + ".")
    elif Record.objects.filter(run=run, key=key).exists():
        sel.records = sel.records.filter(key=key)
    else:
        sel.problems.append(
            f"This run has no task or record '{key[:50]}'; that filter was left out."
        )
        return
    sel.filters["from"] = key
    sel.words.append(f"made from {key}")


def _by_status(sel, run, params):
    status = _choice(sel, params, "status", ("", *STATUSES), "Review")
    if status == "edited":
        sel.records = sel.records.filter(edited__isnull=False)
    elif status:
        sel.records = sel.records.filter(review=status)
    sel.filters["status"] = status
    if status:
        sel.words.append(status)


def _by_rating(sel, run, params):
    rating = _choice(sel, params, "rating", ("", *RATINGS), "Rating")
    if rating in ("rated", "unrated"):
        sel.records = sel.records.filter(rating__isnull=rating == "unrated")
        sel.words.append(rating)
    elif rating:
        sel.records = sel.records.filter(rating=int(rating))
        sel.words.append(f"rated {rating}")
    sel.filters["rating"] = rating


def step_keys(run, index):
    """The record fields a step's output lands in (its output key, or its callback's)."""
    steps = run.spec_obj.steps
    return steps[index].result_keys() if 0 <= index < len(steps) else []


def _by_text(sel, run, params):
    steps = run.spec_obj.steps
    step = params.get("step", "")
    if step and not (step.isdigit() and int(step) < len(steps)):
        sel.problems.append("Pick the step whose output to search from the list.")
        step = ""
    sel.filters["step"] = step
    q = " ".join(params.get("q", "").split())[:200]
    sel.filters["q"] = q
    if not q:
        return
    # the current version of each record: its edit when it was edited
    plain, edited = Q(pk__in=[]), Q(pk__in=[])
    if step:
        names = {}
        for i, k in enumerate(k for k in step_keys(run, int(step)) if k):
            names[f"_d{i}"], names[f"_e{i}"] = KT(f"data__{k}"), KT(f"edited__{k}")
            plain |= Q(**{f"_d{i}__icontains": q})
            edited |= Q(**{f"_e{i}__icontains": q})
        sel.records = sel.records.alias(**names)
    else:
        escaped = json.dumps(q)[1:-1]  # JSON may be stored with \\u escapes
        for text in {q, escaped}:
            plain |= Q(data__icontains=text)
            edited |= Q(edited__icontains=text)
    sel.records = sel.records.filter(
        (Q(edited__isnull=True) & plain) | (Q(edited__isnull=False) & edited)
    )
    where = f" in the output of {steps[int(step)].name}" if step else ""
    sel.words.append(f"containing '{q}'{where}")


def _sort_of(sel, params):
    return _choice(sel, params, "sort", SORTS, "Sort")


def _bound(sel, params, name, m):
    """The number a bound parameter holds (None when empty or bad, with the problem said)."""
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (m.whole and (value < 0 or value != int(value))):
        kind = "a whole number of characters, such as 200" if m.whole else "a number such as 4"
        sel.problems.append(f"'{raw[:50]}' is not {kind}; that filter was left out.")
        return None
    sel.filters[name] = raw
    return int(value) if m.whole else value


def _by_measure(sel, run, params, m):
    low, high = _bound(sel, params, m.low, m), _bound(sel, params, m.high, m)
    sort = sel.filters["sort"]
    sorting = sort.startswith(m.name + "_")
    if low is None and high is None and not sorting:
        return
    key = params.get(m.field, "")
    if key not in sel.fields(run):
        what = "number" if m is NUMBER else "length"
        shown = f"'{key[:50]}' is not a field of these records: " if key else ""
        sel.problems.append(f"{shown}choose the field whose {what} to use from the list.")
        sel.filters.pop(m.low, None)
        sel.filters.pop(m.high, None)
        if sorting:
            sel.filters["sort"] = ""
        return
    sel.filters[m.field] = key
    alias = f"{m.name}_value"
    value_now = now_value(m.of, key)
    sel.records = sel.records.alias(**{alias: value_now})
    bounds = ((m.low, low, "at least", "gte"), (m.high, high, "at most", "lte"))
    for name, value, op, lookup in bounds:
        if value is not None:
            sel.records = sel.records.filter(**{f"{alias}__{lookup}": value})
            sel.words.append(m.words.format(key=key, op=op, value=sel.filters[name]))
    if sorting:
        sel.order = (alias, sort.endswith("_desc"), value_now)
        sel.words.append(f"sorted by {key}, {SORTS[sort].split(', ')[1]}")


# -- order, and the records either side of one ---------------------------------------


def ordered(records, order, forward=True):
    """Records in a selection's `order` (backward: the reverse, for 'the record before')."""
    tail = ["seq", "id"] if forward else ["-seq", "-id"]
    if order is None:
        return records.order_by(*tail)
    alias, descending, _ = order
    nulls = {"nulls_last": True} if forward else {"nulls_first": True}  # no value: at the end
    value = F(alias)
    head = value.desc(**nulls) if descending == forward else value.asc(**nulls)
    return records.order_by(head, *tail)


def beyond(sel, rec, forward):
    """The selection's records after (`forward`) or before `rec` in its order, nearest first.

    Keyset comparison on (sort value, seq, id): records appear while a run goes, so the
    one-record view moves by position relative to a record, never by a list made up front."""
    if forward:
        tie = Q(seq__gt=rec.seq) | Q(seq=rec.seq, id__gt=rec.id)
    else:
        tie = Q(seq__lt=rec.seq) | Q(seq=rec.seq, id__lt=rec.id)
    cond = tie
    if sel.order is not None:
        alias, descending, expression = sel.order
        # rec may be outside the selection (shown by its id): its value, read directly
        value = Record.objects.filter(pk=rec.pk).values_list(expression, flat=True).first()
        none = Q(**{f"{alias}__isnull": True})
        if value is None:  # rec sorts among the records with no value, at the end
            cond = (none & tie) if forward else (~none | (none & tie))
        else:
            same = Q(**{alias: value}) & tie
            further = Q(**{f"{alias}__{'gt' if forward != descending else 'lt'}": value})
            cond = (further | none | same) if forward else (further | same)
    return ordered(sel.records.filter(cond), sel.order, forward)
