"""What the designer's templates show of a workflow step: its shape, its problems, its trace."""

import json

from django import template

from ..workflow_form import workflow_problems

register = template.Library()


@register.simple_tag
def workflow_card(step):
    """For a step card: the workflow's shape and calls per input, or None for one prompt."""
    wf = step.workflow
    if wf is None:
        return None
    calls, fewer = wf.calls_bound()
    per_input = f"{'up to ' if fewer else ''}{calls} call{'s' if calls != 1 else ''} per input"
    return {
        "shape": wf.shape(),
        "calls": per_input,
        "prompts": [t.id for t in wf.tasks],
        "returns": list(wf.return_value),
    }


@register.simple_tag
def workflow_problems_of(spec, index):
    """The problems of step `index`'s workflow, in sentences (none for a one-prompt step)."""
    if spec is None or index is None or not 0 <= index < len(spec.steps):
        return []
    if spec.steps[index].workflow is None:
        return []
    return workflow_problems(spec, index)


@register.filter
def as_json(value):
    """A value as indented JSON text (escaped by the template like any other text)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
