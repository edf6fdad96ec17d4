"""A record's fields in the order the pipeline makes them (the spec says it, not a stored row)."""

from runner.spec import library
from runner.spec.builder import PipelineBuilder, Step


def test_fields_follow_the_steps_that_make_them():
    spec = library.get("qa-from-topics").spec
    assert spec.record_fields() == ["topic", "subtopic", "question", "answer"]


def test_an_n_to_1_step_keeps_only_what_it_gathers():
    spec = library.get("topics-flatten-qa").spec
    assert spec.record_fields() == ["subtopics", "question", "answer"]
    p = PipelineBuilder("grouped")
    (
        p
        << Step("Q about {{topic}} for {{level}}", name="q", output_key="question").aggregate(
            "questions", group_by="level"
        )
        << Step("Rank {{questions}}", name="rank", output_key="ranking")
    )
    assert p.build().record_fields() == ["level", "questions", "ranking"]


def test_contexts_are_the_same_keys_as_sets():
    spec = library.get("qa-from-topics").spec
    assert spec.contexts() == [{"topic"}, {"topic", "subtopic"}, {"topic", "subtopic", "question"}]
