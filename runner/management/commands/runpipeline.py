"""Run a pipeline from the terminal on the workers that `make run` started.

Exit codes: 0 every task succeeded, 1 some failed (records still written),
2 a bad argument or an invalid spec.
"""

import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from runner import engine, export
from runner.engine import adhoc
from runner.events import stats
from runner.models import Run
from runner.spec import PipelineSpec, SpecError, library, money, tables

INPUT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".json")


class BadArgument(Exception):
    pass


class Command(BaseCommand):
    help = "Run a pipeline (a spec JSON file or a built-in template slug) and write its records."

    # Django's system checks (a third of a second) are for `manage.py check`, `migrate`
    # and the server; a command run again and again should not pay for them each time.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "spec", help=f"a spec JSON file, or one of: {', '.join(library.slugs())}"
        )
        parser.add_argument(
            "--input",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="one input value (repeat for several keys)",
        )
        parser.add_argument(
            "--inputs", metavar="FILE", help="many inputs: a .jsonl, .csv, .tsv or .json file"
        )
        parser.add_argument(
            "--base-url",
            help="an OpenAI-compatible endpoint for every step, e.g. http://127.0.0.1:8001/v1",
        )
        parser.add_argument(
            "--api-key", default="", help="the endpoint's API key (stored encrypted)"
        )
        parser.add_argument("--model", default="", help="the model every step uses")
        parser.add_argument("--concurrency", type=int, help="calls in flight at once")
        parser.add_argument(
            "--budget",
            metavar="DOLLARS",
            help="pause the run when its calls have cost this many dollars, e.g. 2.50",
        )
        parser.add_argument("--output", help="where to write the records: .jsonl, .csv or .parquet")
        parser.add_argument(
            "--user",
            help="the owner of the run (needed when there are several accounts; default: "
            "the only account, or on an empty database a 'cli' user that the browser's "
            "/setup/ turns into the first account)",
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.add_argument(
            "--summary", metavar="FILE", help="also write what the run did as a JSON object"
        )

    def handle(self, *args, **opts):
        try:
            spec, inputs, output = self._prepare(opts)
            user = owner(opts["user"])
            providers = {}
            if opts["base_url"]:
                provider = adhoc.provider_for_url(
                    user, opts["base_url"], opts["api_key"], opts["model"], opts["concurrency"]
                )
                providers = {"*": provider.pk, **{s.name: provider.pk for s in spec.steps}}
            budget = self._budget(opts["budget"])
            try:  # the same estimate the launch page shows
                est = engine.estimate_run(
                    user, spec, inputs, providers=providers, model=opts["model"]
                )
            except engine.LaunchError:
                est = None  # launch_run says what is wrong
            if est is not None:
                self.stderr.write(f"Estimate: {est.chain}; {est.summary()}.")
            run = engine.launch_run(
                user,
                spec,
                inputs,
                providers=providers,
                model=opts["model"],
                concurrency=opts["concurrency"],
                budget=budget,
            )
        except (BadArgument, SpecError, engine.LaunchError) as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            if len(problems) == 1:  # one clear line
                self.stderr.write(f"Cannot start the run: {problems[0]}")
            else:
                self.stderr.write("Cannot start the run:")
                for p in problems:
                    self.stderr.write(f"  - {p}")
            sys.exit(2)
        self.stderr.write(
            f"Run {run.code} started: {len(inputs)} input(s), {len(spec.steps)} step(s)."
        )
        started = time.monotonic()
        try:
            run = self._watch(run, quiet=opts["quiet"])
        except KeyboardInterrupt:
            engine.cancel_run(run)
            self.stderr.write(f"\nCancelled run {run.code}; resume it later from the run page.")
            self.stderr.write(f"status: {Run.CANCELLED}")
            sys.exit(130)
        wall = time.monotonic() - started
        n = export.write_records(run, output)
        self.stderr.write(f"Wrote {n} record(s) to {output}")
        failures = stats.failure_summary(run)
        if failures:
            self.stderr.write(f"{sum(c for c, _ in failures)} task(s) failed:")
            for count, reason in failures[:20]:
                self.stderr.write(f"  {count} x {reason}")
        if run.error and run.status != Run.COMPLETED:
            self.stderr.write(run.error)
        if opts["summary"]:
            Path(opts["summary"]).write_text(
                json.dumps(stats.run_summary(run, wall), indent=2, ensure_ascii=False) + "\n"
            )
        self.stderr.write(f"status: {run.status}")
        if run.status != Run.COMPLETED:
            sys.exit(1)

    # arguments

    def _prepare(self, opts):
        source = opts["spec"]
        path = Path(source)
        if path.suffix.lower() == ".json" or path.exists():
            if not path.is_file():
                raise BadArgument(f"spec file {source} does not exist")
            try:
                tables.check_size(path.stat().st_size, tables.Limits.from_settings(settings))
            except tables.TableError as exc:
                raise BadArgument(f"{source}: {exc}") from None
            spec = PipelineSpec.load(path.read_bytes(), max_depth=settings.JSON_MAX_DEPTH)
        else:
            template = library.get(source)
            if template is None:
                raise BadArgument(
                    f"'{source}' is neither a spec file nor a template ({', '.join(library.slugs())})"
                )
            spec = template.spec
        inputs = []
        if opts["inputs"]:
            inputs = read_inputs(opts["inputs"])
        if opts["input"]:
            row = {}
            for item in opts["input"]:
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise BadArgument(f"--input '{item}' must look like KEY=VALUE")
                row[key.strip()] = value
            if inputs:
                inputs = [{**r, **row} for r in inputs]
            else:
                inputs = [row]
        if not inputs:
            if not spec.inputs:
                raise BadArgument(
                    f"give inputs with --input KEY=VALUE or --inputs FILE (keys: {', '.join(spec.first_step_keys())})"
                )
            inputs = spec.inputs
            self.stderr.write(f"No inputs given: using the spec's {len(inputs)} example input(s).")
        if opts["concurrency"] is not None and not 1 <= opts["concurrency"] <= 10_000:
            raise BadArgument("--concurrency must be between 1 and 10000")
        if opts["base_url"]:
            url = urlparse(opts["base_url"])
            if url.scheme not in ("http", "https") or not url.netloc:
                raise BadArgument(f"--base-url '{opts['base_url']}' is not an http(s) URL")
        output = opts["output"] or f"{(library.get(source) and source) or path.stem}-records.jsonl"
        if Path(output).suffix.lower() not in export.FORMATS:
            raise BadArgument(f"--output must end in one of {', '.join(export.FORMATS)}")
        return spec, inputs, output

    def _budget(self, text):
        """--budget in dollars, checked here so a typo stops before the run starts."""
        try:
            micro = money.parse_dollars(text)
        except ValueError:
            raise BadArgument(f"--budget '{text}' is not an amount of dollars, like 2.50") from None
        if micro is not None and micro < 10_000:
            raise BadArgument("--budget must be at least $0.01")
        return text if micro is not None else None

    # progress

    def _watch(self, run, quiet):
        tty = self.stderr.isatty()
        last_print = 0.0
        warned = False
        started = time.monotonic()
        every = 0.5 if tty else 2
        while True:
            run.refresh_from_db(fields=["status"])  # cheap: the end is seen within 0.05 s
            now = time.monotonic()
            if not quiet and (now - last_print > every or not run.is_active):
                run.refresh_from_db()
                self._draw(stats.run_state(run), tty)
                last_print = now
            if not run.is_active:
                run.refresh_from_db()
                return run
            if run.status == Run.QUEUED and now - started > 15 and not warned:
                self.stderr.write("\nNo worker has picked up the run yet: is `make run` running?")
                warned = True
            time.sleep(0.05)

    def _draw(self, state, tty):
        lines = []
        for st in state["steps"]:
            c = st["counts"]
            total = sum(c.values())
            finished = c["done"] + c["failed"] + c["cancelled"]
            width = 30
            filled = int(width * finished / total) if total else 0
            bar = "#" * filled + "-" * (width - filled)
            lines.append(
                f"{st['name'][:18]:<18} [{bar}] {finished}/{total}"
                + (f"  {c['failed']} failed" if c["failed"] else "")
                + (f"  {c['running']} running" if c["running"] else "")
            )
        lines.append(f"status: {state['status']}  records: {state['records']}")
        text = "\n".join(lines)
        if tty:
            self.stderr.write(text + f"\x1b[{len(lines)}A\r", ending="")
            if state["status"] not in ("queued", "running"):
                self.stderr.write("\n" * len(lines))
        else:
            self.stderr.write(text)


def owner(username=None):
    """The run's owner: the user named, else the only account, else (an empty database) the
    `cli` user, which has no password and which /setup/ adopts as the first account, so
    the browser is never locked out. Several accounts: --user is needed."""
    if not username:
        accounts = get_user_model().objects.order_by("username")
        count = accounts.count()
        if count > 1:
            names = ", ".join(accounts.values_list("username", flat=True)[:10])
            raise BadArgument(
                f"there are {count} accounts ({names}{', ...' if count > 10 else ''}): "
                "choose the run's owner with --user NAME"
            )
    try:
        return adhoc.owner_for(username)
    except adhoc.NoSuchUser as exc:
        raise BadArgument(str(exc)) from None


def read_inputs(name):
    """The rows of an inputs file, read as the launch page reads an upload (one reader)."""
    path = Path(name)
    if not path.is_file():
        raise BadArgument(f"inputs file {name} does not exist")
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise BadArgument(f"inputs file {name} must be {', '.join(INPUT_SUFFIXES)}")
    limits = tables.Limits.from_settings(settings)
    try:
        tables.check_size(path.stat().st_size, limits)  # before reading it into memory
        return tables.read_table(path.read_bytes(), path.name, limits).rows
    except tables.TableError as exc:
        raise BadArgument(f"{name}: {exc}") from None


# CommandError is Django's way; we exit with our own codes instead.
__all__ = ["Command", "CommandError"]
