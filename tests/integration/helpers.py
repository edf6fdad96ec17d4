import time

from runner.events import stats
from runner.models import Provider


def provider_for(owner, fake, concurrency=50, name="fake"):
    p = Provider.objects.filter(owner=owner, name=name).first() or Provider(owner=owner, name=name)
    p.base_url, p.default_model, p.concurrency = fake.url, "fake-model", concurrency
    p.set_api_key("sk-test-1234")
    p.save()
    return p


def wait_for(run, timeout=60, until=None):
    """Wait until the run stops being active (or `until(run)` holds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run.refresh_from_db()
        if until(run) if until else not run.is_active:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run still {run.status} after {timeout}s: {stats.run_state(run)}")
