"""How much reviewers agree: percent agreement, Cohen's kappa (two reviewers), Fleiss'
kappa (more), and the spread of ratings. Pure functions of the verdicts.

- percent agreement: over records with two or more verdicts, the share of pairs of
  verdicts on the same record that agree (Fleiss' P-bar), and the share of records
  on which every verdict agrees;
- Cohen's kappa: (po - pe) / (1 - pe) for two reviewers over the records both judged;
- Fleiss' kappa: (P-bar - Pe) / (1 - Pe) over records with the same number of verdicts.
A kappa is None when it is undefined (fewer than two records, or one label only).
"""

import statistics
from collections import Counter


def pair_agreement(labels):
    """The share of the pairs of `labels` (one record's verdicts) that agree."""
    n = len(labels)
    if n < 2:
        return None
    counts = Counter(labels).values()
    return sum(c * (c - 1) for c in counts) / (n * (n - 1))


def percent_agreement(items):
    """(mean pairwise agreement, share of records where all agree) over `items`, each
    one record's list of verdicts; records with fewer than two verdicts are left out."""
    scored = [x for x in items if len(x) >= 2]
    if not scored:
        return None, None
    mean = statistics.fmean(pair_agreement(x) for x in scored)
    unanimous = sum(len(set(x)) == 1 for x in scored) / len(scored)
    return mean, unanimous


def cohen_kappa(a, b):
    """Cohen's kappa of two reviewers' verdicts on the same records (aligned lists)."""
    if len(a) != len(b):
        raise ValueError("both reviewers' verdicts must be on the same records")
    n = len(a)
    if n < 2:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if pe == 1:
        return None
    return (po - pe) / (1 - pe)


def fleiss_kappa(items):
    """Fleiss' kappa of records that each have the same number (>= 2) of verdicts."""
    items = [list(x) for x in items]
    if len(items) < 2:
        return None
    raters = len(items[0])
    if raters < 2 or any(len(x) != raters for x in items):
        raise ValueError("Fleiss' kappa needs the same number of verdicts on every record")
    n_items = len(items)
    p_bar = statistics.fmean(pair_agreement(x) for x in items)
    totals = Counter(label for x in items for label in x)
    pe = sum((c / (n_items * raters)) ** 2 for c in totals.values())
    if pe == 1:
        return None
    return (p_bar - pe) / (1 - pe)


def rating_spread(items):
    """(mean range, mean standard deviation) of ratings over records with two or more."""
    scored = [x for x in items if len(x) >= 2]
    if not scored:
        return None, None
    ranges = statistics.fmean(max(x) - min(x) for x in scored)
    spread = statistics.fmean(statistics.pstdev(x) for x in scored)
    return ranges, spread
