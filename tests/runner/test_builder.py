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
    assert [s.fan for s in spec.steps] == ["1 → N", "1 → n", "N → 1", "1 → 1"]


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


def test_quality_chains_and_a_judge_step_build_the_same_spec_the_designer_saves():
    from runner.spec.builder import Judge

    pipeline = PipelineBuilder("Judged QA")
    pipeline << Step(
        "Write questions about {{topic}} as a JSON list", output="json_list", output_key="questions"
    ).scatter("question").drop_duplicates("question", threshold=0.9)
    pipeline << Step("Answer: {{question}}", output_key="answer")
    pipeline << Judge(
        ["question", "answer"], {"helpfulness": "How helpful the answer is"}, model="judge-model"
    ).keep("helpfulness", ">=", 4)
    pipeline.input(topic="Volcanoes")
    spec = pipeline.build()
    first, _, judge = spec.steps
    assert first.dedup.field == "question" and first.dedup.threshold == 0.9
    assert judge.judge.criteria[0].key == "helpfulness"
    assert judge.model.name == "judge-model" and judge.params.temperature == 0.0
    assert [(f.field, f.op, f.value) for f in judge.keep] == [("helpfulness", ">=", "4")]
    assert spec.record_fields()[-2:] == ["helpfulness", "rationale"]
    assert PipelineSpec.load(spec.to_json()).to_dict() == spec.to_dict()
