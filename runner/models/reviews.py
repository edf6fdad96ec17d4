"""Review by several people: who reviews which records of a run, and each one's verdict.

A run's `ReviewPlan` names its reviewers (in order) and how many review each record
(`overlap`: 1 splits the records among them, k gives every record to k of them). Which
records are whose is a rule on the record's id, not rows written per record, so records
are assigned the moment they are made, and a reviewer's queue is one query:
reviewer j of n has the records whose `(id + n - j) mod n < overlap`.

Each reviewer's verdict is a `Review`. The record's own `review` is the run's decision:
the one an editor settled (`Record.settled`), else the majority of its reviews (a tie
is no decision).
"""

from django.conf import settings
from django.db import models
from django.db.models import F
from django.db.models.functions import Mod

from .runs import Record, Run


class ReviewPlan(models.Model):
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="review_plan")
    reviewers = models.JSONField(default=list)  # user ids, in order
    overlap = models.PositiveSmallIntegerField(default=1)
    guidelines = models.TextField(blank=True, default="")  # Markdown, shown while reviewing
    created = models.DateTimeField(auto_now_add=True)

    def index_of(self, user_id):
        try:
            return self.reviewers.index(user_id)
        except ValueError:
            return None

    def assigned(self, records, user_id):
        """The records (a Record queryset) that `user_id` is to review; none if not in the plan."""
        j = self.index_of(user_id)
        if j is None:
            return records.none()
        n = len(self.reviewers)
        return records.annotate(lane=Mod(F("id") + (n - j), n)).filter(lane__lt=self.overlap)

    def reviewers_of(self, record_id):
        """The user ids the record is assigned to."""
        n = len(self.reviewers)
        return [u for j, u in enumerate(self.reviewers) if (record_id + n - j) % n < self.overlap]


class Review(models.Model):
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    decision = models.CharField(max_length=12, default=Record.UNREVIEWED)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["record", "reviewer"], name="review_record_reviewer")
        ]
        indexes = [models.Index(fields=["reviewer", "updated"], name="review_reviewer_updated")]


def decide(record):
    """Set the record's decision from its reviews, unless an editor settled it."""
    if record.settled:
        return record.review
    votes = [d for d in record.reviews.values_list("decision", flat=True) if d != Record.UNREVIEWED]
    yes, no = votes.count(Record.ACCEPTED), votes.count(Record.REJECTED)
    decision = Record.ACCEPTED if yes > no else Record.REJECTED if no > yes else Record.UNREVIEWED
    if decision != record.review:
        record.review = decision
        record.save(update_fields=["review"])
    return decision
