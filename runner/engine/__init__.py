"""The engine: how a run executes, with no HTML.

`lifecycle` is what the rest of the product calls (launch, cancel, resume, retry,
budget, estimate); `endpoints`, `limits`, `calls`, `driver`, `writer` and `trial`
are how the work gets done. The engine tells the layers above it about changes
through `signals.run_changed`, and starts Celery work by task name.
"""

from .endpoints import LaunchError
from .lifecycle import (
    cancel_run,
    estimate_run,
    launch_run,
    resume_run,
    retry_failed,
    set_budget,
    start_drivers,
)

__all__ = [
    "LaunchError",
    "cancel_run",
    "estimate_run",
    "launch_run",
    "resume_run",
    "retry_failed",
    "set_budget",
    "start_drivers",
]
