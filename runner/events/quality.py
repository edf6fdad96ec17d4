"""The quality of a run's records, while it runs and after: diversity, judges, duplicates.

- **fields**: for each field a record has of its own (`quality.profiled_fields`), over
  a sample of the kept records: exact and near duplicates, distinct-1 and distinct-2,
  and the spread of lengths (`quality.field_profile`);
- **judges**: for each score a judge step writes, its mean over a sample, and over
  the whole run how many judged items passed the step's "keep only" and how many it
  filtered out; pairwise judges also count how often A and B won;
- **dedup**: for each step that drops duplicates, how many it set aside and the calls
  that saved downstream (the estimator's fan-out after the step);
- **embeddings**: once the run has ended, when one of its providers names an
  embeddings model (OpenAI-compatible `/embeddings`), each field's
  `embedding_diversity`: the mean cosine distance between the texts of a sample of
  `EMBED_SAMPLE` records (0: all the same; about 1: unrelated).

Counts come from one aggregate query; the sample is every k-th kept record (at most
`RUNNER_QUALITY_SAMPLE`, fewer while the run goes: `RUNNER_QUALITY_LIVE_SAMPLE`).
The result is kept in Redis for `RUNNER_QUALITY_SECONDS` while the run goes (every
process that shows the run shares it; one computes at a time), and for good once the
run has ended.
"""

import json
import logging
import statistics
import time

from django.conf import settings
from django.db.models import Count, F
from django.db.models.functions import Mod

from runner.engine import keys, limits
from runner.models import Provider, Record, Task
from runner.providers import ProviderError
from runner.providers.embeddings import embed
from runner.spec import estimate, quality

log = logging.getLogger("runner.events")

ENDED_TTL = 7 * 24 * 3600
FINAL_WAIT_SECONDS = 60  # an ended run's measure being made elsewhere is waited for this long
EMBED_SAMPLE = 200  # texts a field's embedding diversity is measured on


def quality_state(run, sample=None, embeddings=True):
    """The run's quality block (see the module's docstring); computed now, not cached.

    `embeddings`: also measure with an embeddings model when the run has one."""
    spec = run.spec_obj
    size = sample or settings.RUNNER_QUALITY_SAMPLE
    rows = _sample(run, size)
    out = {"sampled": len(rows), "fields": _fields(spec, rows)}
    if embeddings and not run.is_active and out["fields"]:
        measured = _embedding_diversity(run, out["fields"], rows)
        if measured:
            out["embeddings"] = measured
    counts = _set_aside_counts(run)
    out["judges"] = _judges(run, spec, rows, counts, size)
    out["dedup"] = _dedup(spec, counts)
    for entry in out["dedup"]:
        field = out["fields"].get(entry["field"])
        if field is not None:
            field["set_aside"] = {
                "duplicates": entry["duplicates"],
                "near_duplicates": entry["near_duplicates"],
            }
    return out


def cached_quality(run, wait=0):
    """`quality_state`, from Redis when fresh enough; None when it cannot be had now.

    `wait`: seconds to wait for another process that is measuring it right now (so an
    ended run's measure, and its embeddings calls, are made once)."""
    active = run.is_active
    # An ended run's measure is kept under the moment it ended: resumed and ended again,
    # it is measured again.
    ended = "live" if active or not run.finished else int(run.finished.timestamp())
    name = keys.key("quality", run.code.hex, ended)
    try:
        r = limits.client()
        deadline = time.monotonic() + wait
        while True:
            held = r.get(name)
            if held is not None:
                return json.loads(held)
            if r.set(name + ":busy", "1", nx=True, ex=60):
                break
            if time.monotonic() >= deadline:
                return None  # another process is computing it
            time.sleep(0.1)
    except Exception:
        log.warning("quality of run %s not cached: Redis unreachable", run.code, exc_info=True)
        return None
    try:
        size = settings.RUNNER_QUALITY_LIVE_SAMPLE if active else None
        state = quality_state(run, size, embeddings=not active)
        ttl = max(1, round(settings.RUNNER_QUALITY_SECONDS)) if active else ENDED_TTL
        r.set(name, json.dumps(state), ex=ttl)
        return state
    except Exception:
        log.warning("could not measure the quality of run %s", run.code, exc_info=True)
        return None
    finally:
        try:
            r.delete(name + ":busy")
        except Exception:
            pass


def final_quality(run):
    """The full measure (every sample record, embeddings too): the one kept in Redis for an
    ended run, so a card or a summary does not measure it (or call an embeddings
    endpoint) again; measured now while the run goes or when the cache cannot answer."""
    held = cached_quality(run, wait=FINAL_WAIT_SECONDS) if not run.is_active else None
    return held if held is not None else quality_state(run)


def forget(run):
    """Drop the cached quality (records changed by hand: a restore, an edit)."""
    try:
        r = limits.client()
        held = list(r.scan_iter(keys.key("quality", run.code.hex, "*"), count=100))
        if held:
            r.delete(*held)
    except Exception:
        pass


def _sample(run, size, records=None):
    """Every k-th kept record's current data (or of `records`), at most `size` of them."""
    records = Record.objects.filter(run_id=run.pk).kept() if records is None else records
    total = records.count()
    if not total:
        return []
    stride = -(-total // size)
    if stride > 1:
        records = records.annotate(sample_mod=Mod(F("id"), stride)).filter(sample_mod=0)
    rows = records.order_by("id").values_list("data", "edited")[:size]
    return [Record.current_of(data, edited) for data, edited in rows]


def _fields(spec, rows):
    names = quality.profiled_fields(spec)
    if names is None and rows:
        names = sorted(rows[0])
    out = {}
    for name in names or []:
        values = [r.get(name) for r in rows if r.get(name) is not None]
        if values and sum(isinstance(v, str) for v in values) * 2 >= len(values):
            out[name] = quality.field_profile([v for v in values if isinstance(v, str)])
    return out


def embedding_provider(run):
    """The first of the run's providers that names an embeddings model, or None."""
    ids = [v for v in (run.providers or {}).values() if v]
    return (
        Provider.objects.filter(pk__in=ids, kind="openai")
        .exclude(embedding_model="")
        .order_by("pk")
        .first()
    )


def mean_cosine_distance(vectors):
    """1 - the mean cosine similarity of every pair of vectors (None for fewer than two)."""
    import numpy as np

    if len(vectors) < 2:
        return None
    m = np.asarray(vectors, dtype=float)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sims = m @ m.T
    n = len(m)
    mean = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return round(float(1.0 - mean), 4)


def _embedding_diversity(run, fields, rows):
    provider = embedding_provider(run)
    if provider is None:
        return None
    step = max(1, len(rows) // EMBED_SAMPLE)
    picked = rows[::step][:EMBED_SAMPLE]
    texts = 0
    try:
        for key, profile in fields.items():
            values = [r[key] for r in picked if isinstance(r.get(key), str)]
            vectors = embed(provider.base_url, provider.api_key, provider.embedding_model, values)
            profile["embedding_diversity"] = mean_cosine_distance(vectors)
            texts += len(values)
    except ProviderError as exc:
        log.warning("run %s: no embedding diversity: %s", run.code, exc)
        return {"model": provider.embedding_model, "error": str(exc)}
    return {"model": provider.embedding_model, "provider": provider.name, "texts": texts}


def _set_aside_counts(run):
    """{(step, flag): n} of the run's set-aside records."""
    rows = (
        Record.objects.filter(run_id=run.pk)
        .set_aside()
        .values("step", "flag")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {(r["step"], r["flag"]): r["n"] for r in rows}


def _judges(run, spec, kept, counts, size):
    """Each score's mean over what the judge scored: kept records and those it filtered out."""
    judged = dict(
        Task.objects.filter(run_id=run.pk, status=Task.DONE)
        .values_list("step")
        .annotate(n=Count("id"))
        .order_by()
    )
    out = {}
    for i, step in enumerate(spec.steps):
        judge = step.judge
        if judge is None:
            continue
        filtered = counts.get((i, Record.FILTERED), 0)
        done = judged.get(i, 0)
        rows = kept
        if filtered:
            left_out = Record.objects.filter(run_id=run.pk, flag=Record.FILTERED, step=i)
            rows = kept + _sample(run, size, left_out)
        score_keys = [
            (c, f"{c.key}_{side}" if judge.pair else c.key)
            for c in judge.criteria
            for side in (("a", "b") if judge.pair else ("",))
        ]
        for c, key in score_keys:
            values = [r.get(key) for r in rows if r.get(key) is not None]
            entry = {"step": step.name, "judged": done, "passed": done - filtered}
            entry["filtered"] = filtered
            if c.scale == "1-5":
                numbers = [v for v in values if isinstance(v, int | float)]
                entry["mean"] = round(statistics.fmean(numbers), 2) if numbers else None
            else:
                entry["mean"] = None
                entry["pass_rate"] = (
                    round(sum(v == quality.PASS for v in values) / len(values), 4)
                    if values
                    else None
                )
            out[key] = entry
        if judge.pair:
            picks = [r.get(judge.preferred_key) for r in rows]
            out[judge.preferred_key] = {
                "step": step.name,
                "A": picks.count("A"),
                "B": picks.count("B"),
            }
    return out


def _dedup(spec, counts):
    plan = None
    out = []
    for i, step in enumerate(spec.steps):
        if step.dedup is None:
            continue
        if plan is None:
            plan = estimate.count(spec, [{}])
        exact = counts.get((i, Record.DUPLICATE), 0)
        near = counts.get((i, Record.NEAR_DUPLICATE), 0)
        per_item = quality.calls_saved_per_item(plan, i)
        out.append(
            {
                "step": step.name,
                "field": step.dedup.field,
                "duplicates": exact,
                "near_duplicates": near,
                "calls_saved": round((exact + near) * per_item),
            }
        )
    return out
