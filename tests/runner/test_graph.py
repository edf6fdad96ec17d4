"""The pipeline drawn (runner.spec.graph): its labels are the estimator's counts, in words."""

import pytest

from runner.spec import estimate, graph, library

TEMPLATES = library.templates()


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.slug for t in TEMPLATES])
def test_every_label_is_the_estimators_count(template):
    spec = template.spec
    counts = estimate.count(spec, spec.inputs)
    drawn = graph.graph(spec, spec.inputs)

    assert drawn.chain == estimate.estimate(spec, spec.inputs).chain
    assert [n.name for n in drawn.nodes] == [s.name for s in spec.steps]
    assert [n.calls for n in drawn.nodes] == [c.calls for c in counts]
    assert [e.total for e in drawn.edges] == [c.made for c in counts]
    assert [e.total_words for e in drawn.edges] == [f"{c.made:,} {c.label}" for c in counts]
    for edge, c in zip(drawn.edges, counts, strict=True):
        if c.per_task is None:
            assert edge.words.endswith(f"{c.made} list") or "lists" in edge.words
        else:
            assert edge.words == f"{c.of(round(c.per_task))} each"
    assert drawn.input_words == f"{len(spec.inputs)} {estimate.input_label(spec, len(spec.inputs))}"


def test_the_topics_template_reads_as_the_issue_says():
    spec = library.get("qa-from-topics").spec
    drawn = graph.graph(spec, spec.inputs)
    assert drawn.fan_chain == "1 topic → 5 subtopics each → 1 question each → 1 answer each"
    assert drawn.chain == "1 topic → 5 subtopics → 5 questions → 5 answers"
    assert [n.kind for n in drawn.nodes] == [graph.LIST, graph.PROMPT, graph.PROMPT]


def test_fifty_inputs_fan_out_to_two_hundred_and_fifty():
    spec = library.get("qa-from-topics").spec
    drawn = graph.graph(spec, [{"topic": f"t{i}"} for i in range(50)])
    assert drawn.chain == "50 topics → 250 subtopics → 250 questions → 250 answers"
    assert [n.calls_words for n in drawn.nodes] == ["50 calls", "250 calls", "250 calls"]


def test_many_into_one_says_all_into_one_list():
    spec = library.get("topics-flatten-qa").spec
    drawn = graph.graph(spec, spec.inputs)
    assert drawn.edges[0].words == "all into 1 list"
    assert drawn.edges[0].total_words == "1 list of subtopics"
    assert drawn.fan_chain == "3 topics → all into 1 list → 9 questions each → 1 answer each"


def test_a_workflow_node_lists_its_prompts_and_its_loop():
    spec = library.get("multi-turn-dialogue").spec
    (node,) = graph.graph(spec, spec.inputs).nodes
    assert node.kind == graph.WORKFLOW
    assert node.prompts == ["user", "assistant"]
    assert node.calls_each == "6 prompts each"
    (loop,) = node.loops
    assert (loop.source, loop.target) == ("assistant", "user")
    assert loop.words == "back to “user” until the number of items in dialogue is at least “6”"


def test_a_workflow_without_a_loop_has_none():
    spec = library.get("draft-critique-revise").spec
    (node,) = graph.graph(spec, spec.inputs).nodes
    assert node.prompts == ["draft", "critique", "revise"]
    assert node.loops == []


def test_a_judge_is_drawn_as_one():
    spec = library.get("preference-pairs").spec
    node = graph.graph(spec, spec.inputs).nodes[-1]
    assert (node.kind, node.kind_words) == (graph.JUDGE, "a judge of 2 criteria")


def test_the_sentence_tells_the_whole_drawing():
    spec = library.get("multi-turn-dialogue").spec
    sentence = graph.graph(spec, spec.inputs).sentence
    assert sentence.startswith("2 topics → 1 dialogue each. In all: 2 topics → 2 dialogues.")
    assert "user, assistant" in sentence and "back to “user”" in sentence


def test_an_empty_pipeline_says_so():
    drawn = graph.graph({"name": "Empty", "steps": []}, [])
    assert drawn.nodes == [] and drawn.sentence == "The pipeline has no steps yet."
