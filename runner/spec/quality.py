"""Quality, as data and as pure rules: judges, filters, duplicates and diversity.

- **Judge** (`JudgeSpec`): a rubric (criteria, each scored 1-5 or pass/fail, with what
  each level means) over chosen fields of the record. A judge step's prompt and the
  JSON schema of its reply are made from the rubric (`judge_prompt`, `judge_schema`);
  its reply becomes fields of the record (`verdict`): one per criterion and the
  rationale. A judge that compares two fields (`pair`, for preference data) scores
  both, says which is better, and writes the `chosen` and `rejected` texts.
- **Filters** (`FilterSpec`): keep only what meets a condition. What fails is set
  aside (a record marked with the reason), never thrown away.
- **Duplicates** (`DedupSpec`): exact (after normalising case and spaces) and near
  (MinHash over word shingles, estimated Jaccard similarity at least `threshold`).
  `normalized`, `shingles` and `signatures` are the pure half; the shared index that
  decides lives in `runner.engine.dedup`.
- **Diversity** (`distinct_n`, `field_profile`): unique n-grams over all n-grams,
  duplicate rates and length spread of a field over records.

Everything here is a function of its arguments.
"""

import hashlib
import json
import re
import statistics
from typing import Literal

from pydantic import Field, model_validator

from .checks import KEY_RE
from .workflow import Strict

NUM_PERM = 128  # MinHash permutations: 8 bands of 16 rows (datasketch's optimum at 0.85)
BANDS, ROWS = 8, 16
SHINGLE_WORDS = 2  # word shingles: pairs of words (a question is often 8-15 words)
SEED = 1

Scale = Literal["1-5", "pass_fail"]
FilterOp = Literal[
    ">=", ">", "<=", "<", "==", "!=", "contains", "not_contains", "min_length", "max_length"
]
FILTER_OPS = FilterOp.__args__
# How each condition reads in plain words (forms, reasons).
OP_WORDS = {
    ">=": "at least",
    ">": "more than",
    "<=": "at most",
    "<": "less than",
    "==": "equal to",
    "!=": "not equal to",
    "contains": "containing",
    "not_contains": "not containing",
    "min_length": "at least this many characters long",
    "max_length": "at most this many characters long",
}
PASS, FAIL = "pass", "fail"


def _key(value):
    if not KEY_RE.match(value or ""):
        raise ValueError(
            f"'{value}' is not a usable field name: use letters, digits and _, starting with a letter"
        )
    return value


class Criterion(Strict):
    """One thing the judge scores: its field name, what it measures, what each level means."""

    key: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=2000)
    scale: Scale = "1-5"
    # level ("1".."5", or "pass" / "fail") -> what it means
    levels: dict[str, str] = Field(default_factory=dict, max_length=5)

    @model_validator(mode="after")
    def _check(self):
        _key(self.key)
        allowed = {"1", "2", "3", "4", "5"} if self.scale == "1-5" else {PASS, FAIL}
        wrong = sorted(set(self.levels) - allowed)
        if wrong:
            raise ValueError(
                f"criterion '{self.key}': level '{wrong[0]}' is not on its scale "
                f"({', '.join(sorted(allowed))})"
            )
        return self


class JudgeSpec(Strict):
    """A rubric over fields of the record; `pair` compares two fields (A and B) instead."""

    fields: list[str] = Field(default_factory=list, max_length=10)
    criteria: list[Criterion] = Field(min_length=1, max_length=10)
    pair: list[str] | None = Field(default=None, min_length=2, max_length=2)
    instructions: str = Field(default="", max_length=10_000)
    rationale_key: str = "rationale"
    preferred_key: str = "preferred"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"

    @model_validator(mode="after")
    def _check(self):
        for name in [*self.fields, *(self.pair or [])]:
            _key(name)
        for name in (self.rationale_key, self.preferred_key, self.chosen_key, self.rejected_key):
            _key(name)
        if not self.fields and not self.pair:
            raise ValueError("a judge needs at least one field of the record to judge")
        keys = [c.key for c in self.criteria]
        if len(set(keys)) != len(keys):
            raise ValueError("two criteria have the same name: rename one of them")
        if self.pair and self.pair[0] == self.pair[1]:
            raise ValueError("a judge compares two different fields")
        return self

    def result_keys(self):
        """The fields a verdict adds to the record, in order."""
        if self.pair:
            scores = [f"{c.key}_{side}" for c in self.criteria for side in ("a", "b")]
            return [
                *scores,
                self.preferred_key,
                self.chosen_key,
                self.rejected_key,
                self.rationale_key,
            ]
        return [*(c.key for c in self.criteria), self.rationale_key]

    def reads(self):
        return [*self.fields, *(self.pair or [])]


def _criterion_schema(c):
    if c.scale == "1-5":
        return {"type": "integer", "minimum": 1, "maximum": 5}
    return {"type": "string", "enum": [PASS, FAIL]}


def judge_schema(judge):
    """The JSON schema of the judge's reply (sent as structured output where supported)."""
    scores = {c.key: _criterion_schema(c) for c in judge.criteria}
    if judge.pair:
        side = {"type": "object", "properties": scores, "required": list(scores)}
        props = {"a": side, "b": side, "better": {"type": "string", "enum": ["A", "B"]}}
        required = ["a", "b", "better"]
    else:
        props, required = dict(scores), list(scores)
    props["rationale"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": [*required, "rationale"]}


def _field_label(name):
    return name.replace("_", " ").capitalize()


def _literal(text):
    """Text put into the judge's template as it is: every brace written by the template
    itself, so `{{`, `{%` or `{#` in a rubric is never filled in or run."""
    return "".join('{{ "{" }}' if ch == "{" else ch for ch in text)


def judge_prompt(judge):
    """The judge's prompt (a sandboxed template over the judged fields).

    The rubric's own words (instructions, descriptions, levels) are literal text."""
    lines = []
    if judge.pair:
        lines.append(
            "You are a careful judge. Compare the two responses below and score each of "
            "them against the rubric, then say which one is better."
        )
    else:
        lines.append("You are a careful judge. Score the text below against the rubric.")
    if judge.instructions.strip():
        lines += ["", _literal(judge.instructions.strip())]
    lines.append("")
    for name in judge.fields:
        lines += [f"{_field_label(name)}:", "{{ " + name + " }}", ""]
    if judge.pair:
        a, b = judge.pair
        lines += ["Response A:", "{{ " + a + " }}", "", "Response B:", "{{ " + b + " }}", ""]
    lines.append("Rubric:")
    for c in judge.criteria:
        scale = (
            "a whole number from 1 (worst) to 5 (best)" if c.scale == "1-5" else '"pass" or "fail"'
        )
        lines.append(f"- {c.key}: {_literal(c.description) or _field_label(c.key)} ({scale})")
        for level, meaning in sorted(c.levels.items()):
            if meaning.strip():
                lines.append(f"    {level}: {_literal(meaning.strip())}")
    lines.append("")
    example_scores = {c.key: (4 if c.scale == "1-5" else PASS) for c in judge.criteria}
    if judge.pair:
        example = {"a": example_scores, "b": example_scores, "better": "A", "rationale": "..."}
        lines.append(
            'Reply with one JSON object only: the scores of response A under "a", of '
            'response B under "b", "better": "A" or "B", and a one or two sentence '
            '"rationale". For example:'
        )
    else:
        example = {**example_scores, "rationale": "..."}
        lines.append(
            "Reply with one JSON object only: one score per criterion and a one or two "
            'sentence "rationale". For example:'
        )
    lines.append(json.dumps(example))
    return "\n".join(lines)


class VerdictError(ValueError):
    pass


def _score(c, value):
    if c.scale == "1-5":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VerdictError(f"the score of '{c.key}' is not a number")
        return max(1, min(5, round(value)))
    text = str(value).strip().lower()
    if text in (PASS, "yes", "true"):
        return PASS
    if text in (FAIL, "no", "false"):
        return FAIL
    raise VerdictError(f"the verdict of '{c.key}' is not pass or fail")


def verdict(judge, parsed, context):
    """The fields a judge's parsed reply adds to a record (VerdictError when it cannot)."""
    if not isinstance(parsed, dict):
        raise VerdictError("the judge's reply is not a JSON object")
    rationale = parsed.get("rationale")
    rationale = "" if rationale is None else str(rationale)
    if not judge.pair:
        out = {c.key: _score(c, parsed.get(c.key)) for c in judge.criteria}
        out[judge.rationale_key] = rationale
        return out
    out = {}
    for side in ("a", "b"):
        scores = parsed.get(side)
        if not isinstance(scores, dict):
            raise VerdictError(f"the judge's reply has no scores for response {side.upper()}")
        for c in judge.criteria:
            out[f"{c.key}_{side}"] = _score(c, scores.get(c.key))
    better = str(parsed.get("better", "")).strip().upper()[:1]
    if better not in ("A", "B"):
        raise VerdictError('the judge did not say which response is better ("A" or "B")')
    a, b = judge.pair
    chosen, rejected = (a, b) if better == "A" else (b, a)
    out[judge.preferred_key] = better
    out[judge.chosen_key] = context.get(chosen)
    out[judge.rejected_key] = context.get(rejected)
    out[judge.rationale_key] = rationale
    return out


# -- filters -----------------------------------------------------------------------


class FilterSpec(Strict):
    """Keep an item when `field op value` holds (`score >= 4`, `verdict == pass`)."""

    field: str = Field(min_length=1, max_length=64)
    op: FilterOp = ">="
    value: str = Field(default="", max_length=10_000)

    @model_validator(mode="after")
    def _check(self):
        _key(self.field)
        if self.op in (">=", ">", "<=", "<", "min_length", "max_length"):
            try:
                float(self.value)
            except ValueError:
                raise ValueError(
                    f"keep only {self.field} {OP_WORDS[self.op]} '{self.value}': that needs a number"
                ) from None
        return self

    def describe(self):
        return f"{self.field} {OP_WORDS[self.op]} {self.value}".strip()


def _text(value):
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _shown(value, limit=60):
    text = _text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def filter_reason(f, context):
    """Why `context` fails filter `f` (plain words), or "" when it is kept."""
    if f.field not in context or context[f.field] is None:
        return f"it has no {f.field} (keep only {f.describe()})"
    value = context[f.field]
    op = f.op
    if op in ("min_length", "max_length"):
        n = len(_text(value))
        ok = n >= float(f.value) if op == "min_length" else n <= float(f.value)
        return "" if ok else f"{f.field} is {n:,} characters long (keep only {f.describe()})"
    if op in (">=", ">", "<=", "<"):
        x = _number(value)
        if x is None:
            return f"{f.field} is '{_shown(value)}', not a number (keep only {f.describe()})"
        y = float(f.value)
        ok = {">=": x >= y, ">": x > y, "<=": x <= y, "<": x < y}[op]
    elif op in ("==", "!="):
        x, y = _number(value), _number(f.value)
        same = (
            x == y
            if x is not None and y is not None
            else (_text(value).strip().lower() == f.value.strip().lower())
        )
        ok = same if op == "==" else not same
    else:
        inside = f.value.lower() in _text(value).lower()
        ok = inside if op == "contains" else not inside
    return "" if ok else f"{f.field} is '{_shown(value)}' (keep only {f.describe()})"


def first_failed(filters, context):
    """The reason of the first filter `context` fails, or ""."""
    for f in filters:
        reason = filter_reason(f, context)
        if reason:
            return reason
    return ""


# -- duplicates ----------------------------------------------------------------------


class DedupSpec(Strict):
    """Drop duplicates of one field: exact (case and spaces ignored) and, when `near`, near."""

    field: str = Field(min_length=1, max_length=64)
    near: bool = True
    threshold: float = Field(default=0.85, ge=0.5, le=1.0)

    @model_validator(mode="after")
    def _check(self):
        _key(self.field)
        return self


_WORD_RE = re.compile(r"\w+", re.UNICODE)


def normalized(value):
    """The text compared for exact duplicates: lower case, runs of spaces as one space."""
    return " ".join(_text(value).lower().split())


def exact_hash(value):
    return hashlib.blake2b(normalized(value).encode(), digest_size=12).hexdigest()


def words(value):
    return _WORD_RE.findall(_text(value).lower())


def shingles(value, k=SHINGLE_WORDS, w=None):
    """Word shingles of a text (the text's words when it has fewer than k); `w`: its
    `words`, when already at hand."""
    w = words(value) if w is None else w
    if len(w) < k:
        return {" ".join(w).encode()} if w else {b""}
    return {" ".join(w[i : i + k]).encode() for i in range(len(w) - k + 1)}


_PERMS = None
_PRIME = (1 << 61) - 1  # the Mersenne prime of the permutations (as datasketch's MinHash)
_MAX_HASH = (1 << 32) - 1


def _permutations():
    """The NUM_PERM (a, b) pairs of the hash permutations, drawn as datasketch draws them
    (so a signature here equals `datasketch.MinHash(num_perm=NUM_PERM, seed=SEED)`'s,
    without importing datasketch, which imports scipy: a second of start-up)."""
    global _PERMS
    if _PERMS is None:
        import numpy as np

        gen = np.random.RandomState(SEED)
        pairs = [
            (gen.randint(1, _PRIME, dtype=np.uint64), gen.randint(0, _PRIME, dtype=np.uint64))
            for _ in range(NUM_PERM)
        ]
        _PERMS = np.array(pairs, dtype=np.uint64).T
    return _PERMS


def signatures(values):
    """MinHash signatures (NUM_PERM unsigned 32-bit values each, as bytes) of texts."""
    return [row.tobytes() for row in signature_matrix(values)]


def signature_matrix(values, chunk=4096, word_lists=None):
    """The MinHash signatures of texts as one (texts x NUM_PERM) array of little-endian
    uint32 (`signatures` as an array): the permutations are applied to `chunk` shingles
    at a time, whatever text they come from, so a text costs its shingles' hashes only.
    `word_lists`: the texts' `words`, when already at hand."""
    import numpy as np

    a, b = _permutations()
    prime, top, shift = np.uint64(_PRIME), np.uint64(_MAX_HASH), np.uint64(61)
    sha1 = hashlib.sha1
    digests, starts, count = [], [], 0
    for i, value in enumerate(values):
        starts.append(count)
        found = [
            sha1(s).digest()[:4]
            for s in shingles(value, w=None if word_lists is None else word_lists[i])
        ]
        digests.extend(found)
        count += len(found)
    out = np.empty((len(starts), NUM_PERM), dtype="<u4")
    if not starts:
        return out
    # sha1's first 4 bytes as a little-endian number: datasketch's hash of a shingle
    hv = np.frombuffer(b"".join(digests), dtype="<u4").astype(np.uint64)
    ends = starts[1:] + [count]
    row = 0
    while row < len(starts):  # whole texts, about `chunk` shingles at a time
        last = row
        while last + 1 < len(starts) and ends[last + 1] - starts[row] <= chunk:
            last += 1
        lo, hi = starts[row], ends[last]
        x = hv[lo:hi, None] * a + b  # wraps around at 2**64, as datasketch's does
        x = (x & prime) + (x >> shift)  # x % prime, for the Mersenne prime 2**61 - 1
        x -= prime * (x >= prime)
        mins = np.bitwise_and(x, top)
        offsets = np.array(starts[row : last + 1], dtype=np.intp) - lo
        out[row : last + 1] = np.minimum.reduceat(mins, offsets, axis=0)
        row = last + 1
    return out


def bands(signature):
    """The LSH band keys of a signature: two signatures sharing one are candidates."""
    size = ROWS * 4
    return [
        hashlib.blake2b(signature[i * size : (i + 1) * size], digest_size=8).hexdigest()
        for i in range(BANDS)
    ]


def similarity(a, b):
    """The Jaccard similarity two signatures estimate."""
    n = len(a) // 4
    return sum(a[i * 4 : i * 4 + 4] == b[i * 4 : i * 4 + 4] for i in range(n)) / n


# -- diversity -----------------------------------------------------------------------


def distinct_n(texts, n, word_lists=None):
    """Unique word n-grams over all word n-grams in `texts` (0.0 when there are none);
    `word_lists`: the texts' `words`, when already at hand."""
    seen, total = set(), 0
    for w in word_lists if word_lists is not None else map(words, texts):
        if n == 1:  # the words themselves stand for their 1-grams
            total += len(w)
            seen.update(w)
            continue
        grams = list(zip(*(w[i:] for i in range(n)), strict=False))
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else 0.0


def near_duplicate_count(texts, threshold=0.85, word_lists=None):
    """How many texts are near (not exact) duplicates of an earlier one (in-memory LSH).

    A text is one when a kept earlier text sharing one of its LSH bands has a
    `similarity` of at least `threshold`; its candidates are compared at once (numpy),
    and each band's texts are kept in an array that grows, so texts alike enough to
    share bands by the thousand cost array work, not a Python loop per pair."""
    import numpy as np

    mat = signature_matrix(texts, word_lists=word_lists)
    need = threshold * NUM_PERM  # similarity >= threshold, in agreeing rows
    exact, index, n = set(), {}, 0
    for i, text in enumerate(texts):
        h = exact_hash(text)
        if h in exact:
            continue
        exact.add(h)
        sig = mat[i]
        keys = bands(sig.tobytes())
        held = [index[k] for k in keys if k in index]
        if held:
            cands = (
                held[0].view()
                if len(held) == 1
                else np.unique(np.concatenate([bucket.view() for bucket in held]))
            )
            if ((mat[cands] == sig).sum(axis=1) >= need).any():
                n += 1
                continue
        for k in keys:
            bucket = index.get(k)
            index[k] = _Bucket.of(i) if bucket is None else bucket.add(i)
    return n


class _Bucket:
    """The ids in one LSH band: an array that doubles when full."""

    __slots__ = ("ids", "size")

    @classmethod
    def of(cls, first):
        import numpy as np

        bucket = cls()
        bucket.ids = np.empty(8, dtype=np.intp)
        bucket.ids[0] = first
        bucket.size = 1
        return bucket

    def add(self, i):
        if self.size == len(self.ids):
            import numpy as np

            self.ids = np.concatenate([self.ids, np.empty(self.size, dtype=np.intp)])
        self.ids[self.size] = i
        self.size += 1
        return self

    def view(self):
        return self.ids[: self.size]


def field_profile(texts, near=True, threshold=0.85):
    """Diversity of one field over records: counts, duplicate rates, distinct-n, lengths."""
    texts = [t for t in texts if t is not None]
    n = len(texts)
    if not n:
        return {"records": 0}
    unique = len({exact_hash(t) for t in texts})
    lengths = [len(_text(t)) for t in texts]
    word_lists = [words(t) for t in texts]
    out = {
        "records": n,
        "duplicates": n - unique,
        "duplicate_rate": round((n - unique) / n, 4),
        "distinct_1": distinct_n(texts, 1, word_lists),
        "distinct_2": distinct_n(texts, 2, word_lists),
        "length_mean": round(statistics.fmean(lengths), 1),
        "length_min": min(lengths),
        "length_max": max(lengths),
        "length_stdev": round(statistics.pstdev(lengths), 1),
    }
    if near:
        nd = near_duplicate_count(texts, threshold, word_lists)
        out["near_duplicates"] = nd
        out["near_duplicate_rate"] = round(nd / n, 4)
    return out


def profiled_fields(spec):
    """The fields whose diversity means something: the ones each record has of its own.

    Fields made before the last fan-out (scatter, split, broadcast) are shared by
    sibling records (a topic repeats across its questions by design), and a judge's
    own fields are its verdict: neither is profiled. None when a Python callback
    hides what the records hold."""
    fields = spec.record_fields()
    if fields is None:
        return None
    fan_out = [i for i, s in enumerate(spec.steps) if s.callback.type in FAN_OUT]
    own = set(fields)
    if fan_out:
        last = fan_out[-1]
        made_after = 1 if spec.steps[last].callback.type == "broadcast" else 0
        own = {k for s in spec.steps[last + made_after :] for k in s.result_keys()}
    verdicts = {k for s in spec.steps if s.judge is not None for k in s.judge.result_keys()}
    return [k for k in fields if k in own and k not in verdicts]


FAN_OUT = ("scatter", "split", "split_lines", "broadcast")


def calls_saved_per_item(plan, after):
    """Calls one item made by step `after` goes on to cost in the later steps.

    `plan`: the estimator's counts (`estimate.count`): each step's calls per task
    (`prompts`) and children per task (`per_task`, None for many -> one, where the cost
    stops depending on one item)."""
    saved, items = 0.0, 1.0
    for st in plan[after + 1 :]:
        saved += items * (st.prompts or 1)
        if st.per_task is None:
            break
        items *= st.per_task
    return saved
