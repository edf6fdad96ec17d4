"""Providers, runs, tasks and records.

Row-level state changes live here as methods; work across rows (claiming,
finishing a chunk, making children) lives in `runner/engine/`.
"""

import hashlib
import uuid

from django.conf import settings
from django.db import connections, models
from django.utils import timezone
from django.utils.functional import cached_property

from runner.spec import PipelineSpec

from .crypto import decrypt, encrypt
from .workspaces import InWorkspace


class Provider(InWorkspace):
    """An LLM endpoint and its key, shared by the members of its workspace.

    `rpm` / `tpm` are the key's requests and tokens per minute (empty: no limit),
    shared by every worker and run that uses the same endpoint and key. `prices`
    maps a model to its [input, output] price in dollars per million tokens.
    """

    KINDS = [
        ("openai", "OpenAI-compatible"),
        ("anthropic", "Anthropic"),
        ("gemini", "Google Gemini"),
    ]

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="providers"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=KINDS, default="openai")
    base_url = models.URLField(max_length=500)
    api_key_encrypted = models.TextField(blank=True, default="")
    api_key_last4 = models.CharField(max_length=4, blank=True, default="")
    default_model = models.CharField(max_length=200, blank=True, default="")
    models_list = models.JSONField(default=list, blank=True)
    concurrency = models.PositiveIntegerField(default=64)
    rpm = models.PositiveIntegerField(null=True, blank=True)  # requests per minute
    tpm = models.PositiveIntegerField(null=True, blank=True)  # tokens per minute
    # A reply larger than this many megabytes fails its call (empty: RUNNER_MAX_REPLY_BYTES).
    max_reply_mb = models.PositiveIntegerField(null=True, blank=True)
    prices = models.JSONField(default=dict, blank=True)  # {model: [input, output]} $/1M tokens
    # A model of the endpoint's /embeddings (OpenAI-compatible): the diversity of a run's texts.
    embedding_model = models.CharField(max_length=200, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="provider_workspace_name")
        ]

    def __str__(self):
        return self.name

    def set_api_key(self, key):
        key = (key or "").strip()
        self.api_key_encrypted = encrypt(key) if key else ""
        self.api_key_last4 = key[-4:] if key else ""

    @property
    def api_key(self):
        return decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @property
    def limit_key(self):
        """Workers share one concurrency budget per endpoint and key."""
        return f"{self.base_url.rstrip('/')}|{self.api_key_last4}|{self.code.hex}"

    @property
    def rate_key(self):
        """Requests and tokens per minute are the key's: shared by every provider row using it."""
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()[:16] if self.api_key else "-"
        return f"{self.base_url.rstrip('/')}|{digest}"


class Run(InWorkspace):
    QUEUED, RUNNING, CANCELLED, COMPLETED, FAILED, PAUSED = (
        "queued",
        "running",
        "cancelled",
        "completed",
        "failed",
        "paused",
    )
    # Every task ended, some failed: the run's records are there but for theirs.
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    STATUSES = [
        (s, s.replace("_", " "))
        for s in (QUEUED, RUNNING, PAUSED, CANCELLED, COMPLETED, COMPLETED_WITH_FAILURES, FAILED)
    ]
    OPEN = (QUEUED, RUNNING, PAUSED)  # a run that can still be cancelled or failed
    # a run that resume can queue again
    STOPPED = (PAUSED, CANCELLED, COMPLETED, COMPLETED_WITH_FAILURES, FAILED)

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs"
    )
    name = models.CharField(max_length=200, blank=True, default="")
    spec = models.JSONField()  # the exact snapshot this run executes
    inputs = models.JSONField(default=list)
    # Which saved pipeline and version this run executes (the designer's; runner only stores them).
    pipeline_code = models.UUIDField(null=True, blank=True, db_index=True)
    pipeline_version = models.PositiveIntegerField(null=True, blank=True)
    # step name (or "*") -> provider id, chosen at launch
    providers = models.JSONField(default=dict, blank=True)
    model_override = models.CharField(max_length=200, blank=True, default="")
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=30, choices=STATUSES, default=QUEUED, db_index=True)
    # A run with a budget pauses when its spend reaches it (micro-dollars; empty: no budget).
    budget_micro = models.BigIntegerField(null=True, blank=True)
    # What its calls have cost so far, in micro-dollars (the sum of its tasks' `cost`).
    spent = models.BigIntegerField(default=0)
    aggregated = models.JSONField(
        default=list, blank=True
    )  # step indexes whose N -> 1 callback ran
    error = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Its tasks counted by step and status (`TaskQuerySet.tally`), saved as it ended with
    # every task ended, so its pages do not count a million tasks again; None while it
    # runs, and from the moment it is queued again.
    tally = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"run {self.code}"

    @property
    def group_name(self):
        return f"run-{self.code.hex}"

    @property
    def is_active(self):
        return self.status in (self.QUEUED, self.RUNNING)

    @cached_property
    def spec_obj(self):
        """The run's spec, parsed once (every reader of a run's spec goes through this)."""
        return PipelineSpec.model_validate(self.spec)

    # -- state changes: the only code that writes `status` -----------------------------
    #
    # Each is one guarded UPDATE (... WHERE status IN the states it may leave), so two
    # workers, or a worker and a person, cannot both move the run; it returns whether
    # it happened and, when it did, sets the same fields on this instance.

    def _move(self, leaving, status, **fields):
        changed = Run.objects.filter(pk=self.pk, status__in=leaving).update(status=status, **fields)
        if changed:
            self.status = status
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)

    def start(self):
        """A driver picked up a queued run."""
        return self._move([self.QUEUED], self.RUNNING, started=timezone.now())

    def pause(self, reason):
        """The budget is spent: stop claiming, say why (a paused run's reason may be updated)."""
        return self._move([self.RUNNING, self.PAUSED], self.PAUSED, error=reason)

    def complete(self, tally=None):
        """Nothing is left to do, and every task succeeded (`tally`: their counts)."""
        return self._move([self.RUNNING], self.COMPLETED, finished=timezone.now(), tally=tally)

    def complete_with_failures(self, reason, tally=None):
        """Nothing is left to do; some tasks failed, so their records are missing."""
        return self._move(
            [self.RUNNING],
            self.COMPLETED_WITH_FAILURES,
            error=reason,
            finished=timezone.now(),
            tally=tally,
        )

    def fail(self, reason, tally=None):
        """The run cannot go on (its spec or its providers are broken); `tally` when every
        task has ended."""
        return self._move(
            self.OPEN, self.FAILED, error=reason, finished=timezone.now(), tally=tally
        )

    def cancel(self):
        """Stop new claims; calls in flight finish and are saved."""
        return self._move(self.OPEN, self.CANCELLED, finished=timezone.now())

    def requeue(self, leaving=STOPPED):
        """A run that stopped (paused, cancelled, ended) goes back to the queue for its drivers.

        `leaving` narrows the states it may leave (a new budget requeues only a paused run)."""
        return self._move(leaving, self.QUEUED, finished=None, error="", tally=None)


CLAIMED_FIELDS = ("id", "step", "key", "seq", "variant", "context", "round")  # what a driver needs


def _claimed_columns(conn):
    return ", ".join(conn.ops.quote_name(f) for f in CLAIMED_FIELDS)


class TaskQuerySet(models.QuerySet):
    def claim(self, run_id, n, token, lease_until, ahead=0, reserve=0):
        """Claim up to `n` pending tasks of a run (earliest step first, then input order)
        under `token`; `ahead` more only from a queue at least twice as long as the claim
        and `reserve` more (what the run's other drivers can start), so tasks waiting
        for a slot in one driver are not ones another driver could start.

        One guarded UPDATE (pending -> running) that returns the claimed rows as the
        driver needs them, in the claim's order (what the slots have no room for yet is
        the last of it). Safe with other drivers: a row goes to one claim only (on
        PostgreSQL a row another claim is taking is skipped, not waited for). Raw SQL:
        a busy driver claims many times a second, and the ORM's three queries were a
        quarter of its time."""
        conn = connections[self.db]
        table = conn.ops.quote_name(Task._meta.db_table)
        take = n
        with conn.cursor() as cur:
            if ahead:
                need = 2 * (n + ahead) + reserve
                cur.execute(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE run_id = %s"
                    " AND status = %s LIMIT %s) AS queue",
                    [run_id, Task.PENDING, need],
                )
                if cur.fetchone()[0] >= need:
                    take = n + ahead
            if take <= 0:
                return []
            # The rows picked first, once (a CTE, materialized): on PostgreSQL a subquery
            # in the WHERE may be run again for every row, and skipping what it locked
            # then picks others each time, more than the LIMIT.
            if conn.features.has_select_for_update_skip_locked:
                materialized, skip = "MATERIALIZED ", " FOR UPDATE SKIP LOCKED"
            else:
                materialized, skip = "", ""
            cur.execute(
                f"WITH picked AS {materialized}(SELECT id FROM {table} WHERE run_id = %s"
                f" AND status = %s ORDER BY step, id LIMIT %s{skip})"
                f" UPDATE {table} SET status = %s, claim = %s, lease_until = %s"
                f" WHERE status = %s AND id IN (SELECT id FROM picked)"
                f" RETURNING {_claimed_columns(conn)}",
                [
                    run_id,
                    Task.PENDING,
                    take,
                    Task.RUNNING,
                    token,
                    conn.ops.adapt_datetimefield_value(lease_until),
                    Task.PENDING,
                ],
            )
            rows = cur.fetchall()
        context = Task._meta.get_field("context")
        claimed = [dict(zip(CLAIMED_FIELDS, row, strict=True)) for row in rows]
        for row in claimed:
            row["context"] = context.from_db_value(row["context"], None, conn)
        claimed.sort(key=lambda row: (row["step"], row["id"]))
        return claimed

    def tally(self, by_run=False):
        """These tasks counted by step and status, with their tokens, calls and cost: rows
        of {step, status, n, tin, tout, calls, cost} (what run pages and lists add up);
        `by_run`: of several runs at once, each row with its `run_id`."""
        rows = (
            self.values(*(["run_id"] if by_run else []), "step", "status")
            .annotate(
                n=models.Count("id"),
                tin=models.Sum("tokens_in"),
                tout=models.Sum("tokens_out"),
                calls=models.Sum("attempts"),
                cost=models.Sum("cost"),
            )
            .order_by()
        )
        return [{k: row[k] or 0 for k in row} | {"status": row["status"]} for row in rows]

    def renew(self, lease_until):
        """Extend the lease of these tasks while they are still running."""
        return self.filter(status=Task.RUNNING).update(lease_until=lease_until)

    def failure_reasons(self):
        """Failed tasks counted by reason, most common first: rows of {"error", "n"}."""
        return (
            self.filter(status=Task.FAILED)
            .values("error")
            .annotate(n=models.Count("id"))
            .order_by("-n", "error")
        )

    def release(self, lost=False, **extra):
        """Put these tasks back in the pending queue, free for any driver to claim.

        `lost`: their worker stopped (or died) with their calls under way; each counts as
        a call that may have been made and paid for, its tokens unknown."""
        if lost:
            extra.update(attempts=models.F("attempts") + 1, lost=models.F("lost") + 1)
        return self.update(status=Task.PENDING, claim="", lease_until=None, **extra)


class Task(models.Model):
    PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED, CANCELLED)]
    TERMINAL = (DONE, FAILED, CANCELLED)

    objects = TaskQuerySet.as_manager()

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    step = models.PositiveIntegerField()
    # Unique within the run: makes child creation idempotent ("in:3", "<parent>:2", "agg:1:<group>").
    key = models.CharField(max_length=300)
    # Sorts tasks of a step in input order (zero-padded positions along the lineage).
    seq = models.CharField(max_length=300)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    variant = models.PositiveIntegerField(default=0)  # the copy number under broadcast(n)
    round = models.PositiveIntegerField(
        default=0
    )  # bumped by "retry failed": a new round makes new calls
    status = models.CharField(max_length=12, choices=STATUSES, default=PENDING)
    lease_until = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=40, blank=True, default="")
    context = models.JSONField(default=dict)
    messages = models.JSONField(null=True, blank=True)  # the prompt as sent
    raw_output = models.TextField(blank=True, default="")
    parsed = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    # Calls under way when their worker stopped or died: counted in `attempts`, tokens unknown.
    lost = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    cost = models.BigIntegerField(default=0)  # micro-dollars (USD x 1e6); 0 when no price is set
    cached = models.BooleanField(default=False)  # answered from an identical call in this run
    # A workflow step's sub-calls in order: prompt as sent, reply, memory after it, tokens, time.
    trace = models.JSONField(null=True, blank=True)
    warning = models.TextField(blank=True, default="")  # done, but stopped at a workflow limit
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="task_run_key")]
        indexes = [
            # the claim's order (earliest step first, then input order) read off the index
            models.Index(fields=["run", "status", "step", "id"], name="task_run_claim_order"),
            models.Index(fields=["run", "step", "seq"], name="task_run_step_seq"),
            # calls per second over the last seconds of a run (the run page)
            models.Index(fields=["run", "finished"], name="task_run_finished"),
        ]

    def __str__(self):
        return f"task {self.pk} (step {self.step}, {self.status})"


class RecordQuerySet(models.QuerySet):
    def kept(self):
        """The run's dataset: records not set aside (restored ones included)."""
        return self.filter(flag="")

    def set_aside(self):
        """Records a filter or the duplicate check set aside."""
        return self.exclude(flag="")

    def counts(self):
        """In one query: the kept records, how many are reviewed, and what was set aside, by why."""
        kept = models.Q(flag="")
        agg = self.aggregate(
            total=models.Count("id", filter=kept),
            accepted=models.Count("id", filter=kept & models.Q(review=Record.ACCEPTED)),
            rejected=models.Count("id", filter=kept & models.Q(review=Record.REJECTED)),
            filtered=models.Count("id", filter=models.Q(flag=Record.FILTERED)),
            duplicates=models.Count("id", filter=models.Q(flag=Record.DUPLICATE)),
            near_duplicates=models.Count("id", filter=models.Q(flag=Record.NEAR_DUPLICATE)),
            restored=models.Count("id", filter=kept & models.Q(restored=True)),
        )
        agg["reviewed"] = agg["accepted"] + agg["rejected"]
        agg["set_aside"] = agg["filtered"] + agg["duplicates"] + agg["near_duplicates"]
        return agg


class Record(models.Model):
    """One row of a run's dataset, with its lineage back to the seed input.

    A record may be *set aside* (`flag`): a step's filter left it out, or it repeats an
    earlier one (exactly, or nearly). It is kept with the reason, the step it stopped
    at (`step`, None for a finished record) and, for a duplicate, the key of the item
    it repeats; review can restore it, and exports leave it out unless asked."""

    UNREVIEWED, ACCEPTED, REJECTED = "unreviewed", "accepted", "rejected"
    FILTERED, DUPLICATE, NEAR_DUPLICATE = "filtered", "duplicate", "near_duplicate"
    FLAGS = [
        ("", "kept"),
        (FILTERED, "filtered out"),
        (DUPLICATE, "duplicate"),
        (NEAR_DUPLICATE, "near duplicate"),
    ]

    objects = RecordQuerySet.as_manager()

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="records")
    task = models.ForeignKey(Task, null=True, on_delete=models.SET_NULL, related_name="records")
    key = models.CharField(max_length=300)
    seq = models.CharField(max_length=300)
    data = models.JSONField()
    edited = models.JSONField(null=True, blank=True)
    review = models.CharField(max_length=12, default=UNREVIEWED)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    flag = models.CharField(max_length=20, choices=FLAGS, blank=True, default="")
    flag_reason = models.TextField(blank=True, default="")
    duplicate_of = models.CharField(max_length=300, blank=True, default="")
    step = models.PositiveIntegerField(null=True, blank=True)  # set aside after this step
    restored = models.BooleanField(default=False)  # set aside, then put back by a reviewer
    # `review` was decided by an editor (not the majority of several reviewers' reviews)
    settled = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="record_run_key")]
        indexes = [
            models.Index(fields=["run", "seq"], name="record_run_seq"),
            models.Index(
                fields=["run", "review"], name="record_run_review"
            ),  # review counters and filters
            models.Index(fields=["run", "flag"], name="record_run_flag"),
        ]

    @property
    def set_aside(self):
        return bool(self.flag)

    def restore(self):
        """Put a set-aside record back among the run's records (its reason is kept)."""
        if self.flag:
            self.flag, self.restored = "", True
            self.save(update_fields=["flag", "restored"])

    @property
    def current(self):
        """What the record says now: the reviewer's edit, else what the run made."""
        return self.current_of(self.data, self.edited)

    @staticmethod
    def current_of(data, edited):
        """`current` for a record read as values (exports read many records that way)."""
        return edited if edited is not None else data

    def lineage(self):
        """Task ids from the seed input to this record's task."""
        ids, task = [], self.task
        while task is not None:
            ids.append(task.pk)
            task = task.parent
        return list(reversed(ids))
