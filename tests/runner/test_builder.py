"""The Python builder, shaped like the seed, produces the same spec the designer saves."""

import pytest

from runner.spec import PipelineSpec, SpecError
from runner.spec.builder import PipelineBuilder, Step
from tests.integration import seed_steps


def test_seed_basic_pipeline_builds_a_scatter_spec():
    spec = seed_steps.basic_pipeline("Write a haiku")
    assert [s.name for s in spec.steps] == ["first_pipeline_step", "second_pipeline_step"]
    assert spec.steps[0].callback.type == "scatter" and spec.steps[0].output_format == "json_list"
    assert spec.inputs == [{"instruction": "Write a haiku"}]
    # it round-trips through JSON like any spec
    assert PipelineSpec.load(spec.to_json()) == spec


def test_inputs_as_kwargs_or_list_but_not_both():
    p = PipelineBuilder() << Step("{{x}}", output_key="y")
    assert p.input(x=1).build().inputs == [{"x": 1}]
    assert p.input([{"x": 1}, {"x": 2}]).build().inputs == [{"x": 1}, {"x": 2}]
    with pytest.raises(TypeError):
        p.input([{"x": 1}], x=2)


def test_custom_callback_method_becomes_a_python_callback():
    spec = seed_steps.flatten_pipeline(["a"])
    cb = spec.steps[0].callback
    assert cb.type == "python" and cb.name == "tests.integration.seed_steps:SubtopicStep"
    assert cb.produces == ["subtopics"]


def test_chained_callbacks():
    p = PipelineBuilder("chain")
    (
        p
        << Step("List 3 {{topic}}", name="a", output="json_list", output_key="items").scatter(
            "item"
        )
        << Step("Q {{item}}", name="b", output_key="q").broadcast(2)
        << Step("A {{q}}", name="c", output_key="ans").aggregate(into="answers")
        << Step("Sum {{answers}}", name="d", output_key="summary")
    )
    spec = p.input(topic="t").build()
    assert [s.fan for s in spec.steps] == ["1 -> N", "1 -> n", "N -> 1", "1 -> 1"]


def test_invalid_pipelines_are_refused_with_the_spec_checks():
    p = (
        PipelineBuilder()
        << Step("{{topic}}", name="a", output_key="x").scatter()
        << Step("{{y}}", name="b", output_key="z")
    )
    with pytest.raises(SpecError) as info:
        p.build()
    assert any("scatter needs" in m for m in info.value.problems)
    assert any("{{y}}" in m for m in info.value.problems)
    with pytest.raises(TypeError):
        PipelineBuilder() << "not a step"
