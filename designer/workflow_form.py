"""The step form with the choice of one prompt or several (a workflow).

The step form (`StepForm`, designer/step_forms.py) edits a one-prompt step;
`WorkflowStepForm` adds the choice "One prompt" / "Several prompts (a workflow)" and,
for a workflow, its prompts (`workflow_rows.WorkflowFields`: posted rows into a
`WorkflowSpec`, and back). The editor uses it as its step form.
"""

from django import forms
from pydantic import ValidationError

from runner.spec import StepSpec

from .step_forms import StepForm, plain_words
from .workflow_rows import WorkflowFields, initial_data

MODE_CHOICES = [("one", "One prompt"), ("workflow", "Several prompts (a workflow)")]

# -- the step form with its workflow section ---------------------------------------------


WORKFLOW_FIELDS = ("workflow", "return_value")  # problems shown in the workflow's own box


def workflow_problems(spec, index):
    """Step `index`'s workflow problems, in plain words, for the box above its prompts."""
    return [
        plain_words(p) for p in spec.problems() if p.step == index and p.field in WORKFLOW_FIELDS
    ]


class WorkflowStepForm(StepForm):
    """The step form, with the choice of one prompt or several (a workflow)."""

    mode = forms.ChoiceField(
        label="This step is made of", choices=MODE_CHOICES, required=False, initial="one"
    )

    def __init__(self, data=None, *args, providers=(), step=None, **kwargs):
        if data is not None and f"{self.prefix}-mode" not in data:
            # built from a saved step (StepForm.for_step), or posted by a page without the
            # choice: the step's own workflow, as the page would post it
            plain = data.dict() if hasattr(data, "dict") else dict(data)
            plain[f"{self.prefix}-mode"] = "workflow" if step and step.workflow else "one"
            if step is not None:
                plain.update(initial_data(step))
            data = plain
        super().__init__(data, *args, providers=providers, step=step, **kwargs)
        self.is_workflow = self.data.get(f"{self.prefix}-mode") == "workflow"
        self.wf = WorkflowFields(self.data)
        if self.is_workflow:
            self.fields["prompt"].required = False
            self.fields["output_key"].required = False
        self.workflow_spec = None

    def clean(self):
        if not self.is_workflow:
            return super().clean()
        data = forms.Form.clean(self)
        if self.errors:
            return data
        self.workflow_spec = self.wf.build()
        for sentence in self.wf.errors:
            self.add_error("mode", sentence)
        if self.workflow_spec is None:
            return data
        try:
            self.step = self._step_spec(data)
        except ValidationError as exc:
            for err in exc.errors():
                self.add_error("mode", err["msg"])
        return data

    def _step_spec(self, data):
        return StepSpec.model_validate(self._step_data(data))

    def _step_data(self, data):
        if not self.is_workflow:
            return {**super()._step_data(data), "workflow": None}
        wf, prev = self.workflow_spec, self.previous
        key = wf.return_value[0]
        if prev is not None and prev.workflow is not None:
            if prev.output_key != prev.workflow.return_value[0]:
                key = prev.output_key  # a name given outside the designer: kept
        one = {**data, "prompt": "", "system": "", "output_format": "text", "output_key": key}
        return {
            **super()._step_data(one),
            "workflow": wf.model_dump(mode="json"),
            "output_schema": None,
        }

    def show_problems(self, problems):
        """The step's problems beside its fields; the workflow's own go in its box instead."""
        return super().show_problems([p for p in problems if p.field not in WORKFLOW_FIELDS])

    # -- for the template ------------------------------------------------------------

    def mode_errors(self):
        return list(self.errors.get("mode", []))


__all__ = ["MODE_CHOICES", "WorkflowStepForm", "workflow_problems"]
