"""`manage.py exportrun RUN_CODE --output FILE`: the run page's export, from a terminal.

    manage.py exportrun 3f2c... --output qa.jsonl --accepted-only
    manage.py exportrun 3f2c... --output sft.parquet --format chat \\
        --prompt-field question --answer-field answer
    manage.py exportrun 3f2c... --output pairs.jsonl --format preference --choose rating
    manage.py exportrun 3f2c... --output all.jsonl --set-aside   (filtered out, duplicates too)
    manage.py exportrun 3f2c... --output qa.csv --fields question:prompt,answer --card README.md

Exit status: 0 when written, 2 when an argument is wrong or the export would have no
rows (the message says which or why; nothing is written).
"""

import sys
import uuid
from pathlib import Path

from django.core.management.base import BaseCommand

from runner import export
from runner.models import Run


class Command(BaseCommand):
    help = "Export a run's records as JSONL, CSV or Parquet (plain, chat or preference rows)."

    # Django's system checks (a third of a second) are for `manage.py check`, `migrate`
    # and the server; a command run again and again should not pay for them each time.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("run", help="the run's code (the UUID in its page's address)")
        parser.add_argument("--output", required=True, help="FILE.jsonl, FILE.csv or FILE.parquet")
        parser.add_argument(
            "--accepted-only", action="store_true", help="only records accepted in review"
        )
        parser.add_argument("--format", default="plain", choices=export.SHAPES, dest="shape")
        parser.add_argument(
            "--fields", default="", help="plain format: the fields to keep, a,b:new_name"
        )
        parser.add_argument("--prompt-field", default="", help="chat/preference: the prompt field")
        parser.add_argument("--answer-field", default="", help="chat/preference: the answer field")
        parser.add_argument("--system", default="", help="chat: a system message for every row")
        parser.add_argument(
            "--choose",
            default=None,
            choices=export.CHOICES,
            help="preference: how the chosen answer is picked (default: by the pipeline's "
            "pairwise judge when it has one, else by rating)",
        )
        parser.add_argument(
            "--decision",
            default="decided",
            choices=("decided", "majority"),
            help="with --accepted-only and several reviewers: the run's decision (an "
            "editor's settled one, else the majority) or the reviewers' majority only",
        )
        parser.add_argument(
            "--set-aside",
            action="store_true",
            help="also export records that filters and the duplicate check set aside "
            "(_meta says why)",
        )
        parser.add_argument("--no-meta", action="store_true", help="leave out the _meta fields")
        parser.add_argument("--card", default="", help="also write a dataset card (README.md)")

    def handle(self, *args, **opts):
        problems = []
        try:
            code = uuid.UUID(opts["run"])
            run = Run.objects.filter(code=code).first()
        except ValueError:
            run = None
        if run is None:
            self._fail([f"no run has the code '{opts['run']}': copy it from the run page"])
        output = Path(opts["output"])
        if output.suffix.lower() not in export.FORMATS:
            problems.append(f"--output must end in one of {', '.join(export.FORMATS)}")
        if not output.parent.exists():
            problems.append(f"the folder {output.parent} does not exist")
        try:
            fields = export.parse_fields(opts["fields"]) if opts["fields"] else None
        except export.ExportError as exc:
            problems += exc.problems
            fields = None
        prompt, answer = opts["prompt_field"], opts["answer_field"]
        if opts["shape"] != "plain" and not (prompt and answer):
            guess_prompt, guess_answer = export.default_chat_fields(run)
            prompt, answer = prompt or guess_prompt, answer or guess_answer
        options = export.Options(
            shape=opts["shape"],
            accepted_only=opts["accepted_only"],
            fields=fields,
            meta=not opts["no_meta"],
            prompt_field=prompt,
            answer_field=answer,
            system=opts["system"],
            choose=opts["choose"] or export.default_choose(run),
            set_aside=opts["set_aside"],
            decision=opts["decision"],
        )
        problems += options.problems(export.record_keys(run))
        if problems:
            self._fail(problems)
        job = export.Export(run, options)
        reason = job.empty_reason()  # say why, rather than write an empty file
        if reason:
            self._fail([reason])
        n = job.write(output)
        self.stderr.write(f"Wrote {n} row(s) to {output}")
        if job.skipped:
            self.stderr.write(f"Left out {job.skipped} record(s): a missing field or no pair.")
        if opts["card"]:
            Path(opts["card"]).write_text(job.card(data_name=output.name), encoding="utf-8")
            self.stderr.write(f"Wrote the dataset card to {opts['card']}")

    def _fail(self, problems):
        self.stderr.write("Cannot export:")
        for p in problems:
            self.stderr.write(f"  - {p}")
        sys.exit(2)
