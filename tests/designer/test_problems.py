"""Spec problems in the designer: beside the field they name, in plain words, whatever
their English sentences say (the designer reads `field`, `code` and `params`)."""

import dataclasses

import pytest

from designer.editor import StepForm  # the step form the designer shows
from designer.step_forms import (
    AS_WRITTEN,
    SENTENCES,
    plain_problem,
    plain_words,
    problems_by_step,
)
from runner.spec import PipelineSpec, Problem
from tests.runner.test_spec import BAD_SPECS, spec_problems

ALL = [p for data, _ in BAD_SPECS for p in spec_problems(data)]
# The specs whose structure is valid: what the designer's draft always is.
DRAFTS = [data for data, _ in BAD_SPECS if isinstance(data, dict) and "colour" not in data]


def reworded(problem):
    return dataclasses.replace(problem, message="step 99 ('?'): reworded", detail="reworded")


def test_every_code_is_worded_and_every_sentence_is_used():
    codes = {p.code for p in ALL}
    assert codes - set(SENTENCES) - AS_WRITTEN == set()
    assert set(SENTENCES) - codes == set(), "a sentence no bad spec makes: add it to BAD_SPECS"
    assert not set(SENTENCES) & AS_WRITTEN


@pytest.mark.parametrize("data", DRAFTS)
def test_each_step_problem_lands_beside_its_field(data):
    spec = PipelineSpec.model_validate(data)
    per_step, general = problems_by_step(spec)
    assert sum(map(len, per_step.values())) + len(general) == len(spec.problems())
    for index, problems in per_step.items():
        form = StepForm.for_step(spec.steps[index], index, providers=[])
        form.show_problems(problems)
        for problem in problems:
            assert problem.step == index
            assert problem.field in form.fields, problem
            assert plain_words(problem) in form.errors[problem.field], problem


@pytest.mark.parametrize("data", DRAFTS)
def test_rewording_a_sentence_does_not_detach_its_problem(data):
    spec = PipelineSpec.model_validate(data)
    problems = spec.problems()
    per_step, _ = problems_by_step(spec, [reworded(p) for p in problems])
    assert per_step.keys() == problems_by_step(spec)[0].keys()
    for index, moved in per_step.items():
        form = StepForm.for_step(spec.steps[index], index, providers=[])
        form.show_problems(moved)
        for problem in moved:
            original = next(p for p in problems if (p.step, p.code) == (index, problem.code))
            assert plain_words(problem) == plain_words(original)
            assert plain_words(original) in form.errors[problem.field]


def test_every_worded_code_is_placed_by_some_draft():
    placed = {p.code for data in DRAFTS for p in PipelineSpec.model_validate(data).problems()}
    assert set(SENTENCES) <= placed
    for problem in ALL:
        if problem.code in SENTENCES:
            assert plain_words(reworded(problem)) == plain_words(problem)


def test_plain_words_use_the_params():
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                {"name": "a", "prompt": "{{topic}}", "output_key": "t"},
                {"name": "b", "prompt": "{{nope}}", "output_key": "x", "system": "{{ t"},
            ]
        }
    )
    by_code = {p.code: p for p in spec.problems()}
    assert plain_words(by_code["unknown_variable"]) == (
        "“{{nope}}” is not made by any step before this one. You can use: {{t}}, {{topic}}."
    )
    assert plain_words(by_code["bad_template"]).startswith(
        "The system prompt has a mistake in a {{ }} placeholder ("
    )
    assert plain_problem(by_code["unknown_variable"]).startswith("Step 2 (b): “{{nope}}” is not")


def test_pipeline_level_and_structural_problems():
    spec = PipelineSpec.model_validate({"steps": []})
    assert problems_by_step(spec) == (
        {},
        ["The pipeline has no steps yet: drag one in from the palette."],
    )
    (colour,) = spec_problems({"steps": [{"name": "a", "prompt": "x", "output_key": "a", "z": 1}]})
    assert plain_problem(colour) == "Step 1 (a): Z is not a known field"
    assert plain_problem(Problem.general("inputs", "no_inputs", "give at least one input")) == (
        "Give at least one input"
    )
    assert plain_problem("a bare sentence") == "A bare sentence"
