"""Which endpoint, key, model, limits and prices each step of a run calls."""

from dataclasses import dataclass, field

from django.conf import settings

from runner.models import Provider, Workspace
from runner.spec import Problem
from runner.spec.checks import as_problems


class LaunchError(ValueError):
    """A run that cannot start: `problems` are `Problem`s (bad inputs, steps without a
    provider or a model), `str()` their sentences."""

    def __init__(self, problems):
        self.problems = as_problems(problems)
        super().__init__("; ".join(p.message for p in self.problems))


@dataclass
class Endpoint:
    kind: str
    base_url: str
    api_key: str
    model: str
    concurrency: int  # the most calls in flight this run makes on it
    pool: str  # the shared concurrency pool (one per endpoint and key)
    rate_key: str = ""  # the shared rate buckets (one per endpoint and key)
    rpm: int | None = None  # requests per minute; None: no limit
    tpm: int | None = None  # tokens per minute; None: no limit
    prices: dict = field(default_factory=dict)  # {model: [input, output]} $ per 1M tokens
    fallbacks: tuple = ()  # models tried in order when `model` keeps failing
    limit: int = 0  # the pool's slots, shared fairly by every run using it (0: concurrency)
    max_reply_bytes: int = 0  # a longer reply fails its call (0: RUNNER_MAX_REPLY_BYTES)

    @property
    def pool_limit(self):
        return self.limit or self.concurrency


def _fallbacks(step, model):
    return tuple(dict.fromkeys(m.strip() for m in step.model.fallbacks if m.strip() and m != model))


def builtin_default():
    """True when the default provider is the built-in local model."""
    return bool(settings.DEFAULT_LLM_BASE_URL) and (
        settings.DEFAULT_LLM_MODEL == settings.LOCAL_MODEL_NAME
    )


def default_endpoint(model, concurrency=None):
    """The endpoint of DEFAULT_LLM_BASE_URL (the built-in local model under `make run`)."""
    url = settings.DEFAULT_LLM_BASE_URL
    limit = settings.DEFAULT_LLM_CONCURRENCY
    if concurrency and not builtin_default():  # the built-in model answers one call at a time
        limit = concurrency
    return Endpoint(
        "openai",
        url,
        settings.DEFAULT_LLM_API_KEY,
        model or settings.DEFAULT_LLM_MODEL,
        limit,
        f"{url}|default",
        rate_key=f"{url}|default",
        prices=dict(settings.DEFAULT_LLM_PRICES),
    )


def endpoint_of(provider, step, model, concurrency=None):
    """The endpoint a step calls on `provider` with `model`."""
    return Endpoint(
        provider.kind,
        provider.base_url,
        provider.api_key,
        model,
        min(concurrency or provider.concurrency, provider.concurrency),
        provider.limit_key,
        rate_key=provider.rate_key,
        rpm=provider.rpm,
        tpm=provider.tpm,
        prices=provider.prices or {},
        fallbacks=_fallbacks(step, model),
        limit=provider.concurrency,
        max_reply_bytes=(provider.max_reply_mb or 0) * 1024 * 1024,
    )


def resolve_endpoints(run, spec):
    """Which endpoint and model each step calls; LaunchError names a step that has none."""
    problems, out = [], []
    cache = {}
    if run.workspace_id is None:  # a run being made: the owner's first workspace
        run.workspace = Workspace.personal(run.owner)
    mine = Provider.objects.filter(workspace_id=run.workspace_id)
    for i, step in enumerate(spec.steps):
        pid = run.providers.get(step.name) or (
            run.providers.get("*") if step.model.provider == "default" else None
        )
        provider = None
        if pid:
            provider = cache.get(pid) or mine.filter(pk=pid).first()
            if provider is None:
                problems.append(
                    Problem.at(
                        i,
                        step.name,
                        "provider",
                        "provider_gone",
                        "the provider chosen for this step no longer exists; "
                        "choose another one and launch again",
                    )
                )
                out.append(None)
                continue
        elif step.model.provider != "default":
            provider = mine.filter(name=step.model.provider).first()
            if provider is None:
                problems.append(
                    Problem.at(
                        i,
                        step.name,
                        "provider",
                        "no_provider_named",
                        f"no provider named '{step.model.provider}'; add it on the providers page",
                        provider=step.model.provider,
                    )
                )
                out.append(None)
                continue
        if provider is not None:
            cache[pid or provider.pk] = provider
            model = run.model_override or step.model.name or provider.default_model
            ep = endpoint_of(provider, step, model, run.concurrency)
        elif settings.DEFAULT_LLM_BASE_URL:
            model = run.model_override or step.model.name or settings.DEFAULT_LLM_MODEL
            ep = default_endpoint(model, run.concurrency)
            ep.fallbacks = _fallbacks(step, model)
        else:
            problems.append(
                Problem.at(
                    i,
                    step.name,
                    "provider",
                    "no_provider",
                    "no LLM provider is set; add one on the providers page or pass --base-url",
                )
            )
            out.append(None)
            continue
        if not ep.model:
            problems.append(
                Problem.at(
                    i,
                    step.name,
                    "model",
                    "no_model",
                    "no model is chosen; set the step's model or the provider's default model",
                )
            )
        out.append(ep)
    if problems:
        raise LaunchError(problems)
    return out
