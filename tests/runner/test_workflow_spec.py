"""Workflow steps in the spec: their checks, and the pure rules the engine runs them by."""

import pytest

from runner.spec import PipelineSpec, SpecError
from runner.spec import memory as rules
from runner.spec import workflow as wf
from runner.spec.builder import PipelineBuilder, Step


def task(id, prompt, *outputs, inputs=(), fmt="text"):
    return {
        "id": id,
        "prompt": prompt,
        "outputs": [{"kind": k, "key": key} for k, key in outputs] or [{"key": id}],
        "inputs": list(inputs),
        "output_format": fmt,
    }


def step_with(workflow, **extra):
    return {"name": "flow", "workflow": workflow, **extra}


def problems(workflow, first=None):
    steps = [first] if first else []
    steps.append(step_with(workflow))
    data = {"input_keys": ["topic"], "steps": steps}
    try:
        PipelineSpec.load(data)
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return []


LOOP = {
    "tasks": [task("ask", "A question on {{topic}}", ("push", "questions"))],
    "edges": [
        {
            "source": "ask",
            "target": "_end",
            "condition": {
                "input": {"kind": "size", "key": "questions"},
                "expression": "GreaterThanOrEqual",
                "expected": "3",
                "target_if_not": "ask",
            },
        }
    ],
    "return_value": ["questions"],
}


def test_a_workflow_step_takes_its_key_and_format_from_its_return_value():
    spec = PipelineSpec.load({"input_keys": ["topic"], "steps": [step_with(LOOP)]})
    step = spec.steps[0]
    assert step.output_key == "questions" and step.output_format == "json_list"
    assert step.workflow.max_steps == 20  # the default bound always applies
    assert step.as_workflow() is step.workflow
    assert spec.record_fields() == ["topic", "questions"]


def test_a_prompt_step_is_a_workflow_of_one_task():
    spec = (PipelineBuilder() << Step("Say {{topic}}", output_key="said")).build()
    one = spec.steps[0].as_workflow()
    assert [t.id for t in one.tasks] == ["prompt"] and one.return_value == ["said"]
    assert one.calls_bound() == (1, False)


def test_a_good_loop_has_no_problems():
    assert problems(LOOP) == []


def test_an_edge_to_a_missing_task_is_named():
    bad = {**LOOP, "edges": [{**LOOP["edges"][0], "target": "nowhere"}]}
    assert problems(bad) == [
        "step 1 ('flow'): the edge from 'ask' goes to 'nowhere', which is no prompt"
    ]


def test_a_task_nothing_leads_to_is_unreachable():
    flow = {
        "tasks": [task("a", "{{topic}}", ("write", "x")), task("b", "{{x}}", ("write", "y"))],
        "edges": [{"source": "a", "target": "_end"}],
        "return_value": ["x"],
    }
    assert problems(flow) == ["step 1 ('flow'): prompt 'b' can never be reached"]


def test_a_loop_without_a_condition_is_refused():
    flow = {
        "tasks": [task("a", "{{topic}}", ("push", "x")), task("b", "{{x}}", ("write", "y"))],
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}],
        "return_value": ["x"],
    }
    assert problems(flow) == [
        "step 1 ('flow'): a loop has no way out: every loop must pass a condition"
    ]


def test_a_read_of_a_key_nothing_writes_names_what_is_there():
    flow = {"tasks": [task("a", "{{topic}} and {{mood}}", ("write", "x"))], "return_value": ["x"]}
    assert problems(flow) == [
        "step 1 ('flow'): prompt 'a' reads 'mood', which no prompt writes and no input "
        "gives (available: topic, x)"
    ]


def test_a_return_value_nothing_writes_is_refused():
    flow = {"tasks": [task("a", "{{topic}}", ("write", "x"))], "return_value": ["y"]}
    assert "step 1 ('flow'): the return value 'y' is never written by a prompt" in problems(flow)


def test_two_edges_from_one_task_and_duplicate_ids_are_refused():
    flow = {
        "tasks": [task("a", "{{topic}}", ("write", "x")), task("a", "{{x}}", ("write", "y"))],
        "edges": [{"source": "a", "target": "_end"}, {"source": "a", "target": "_end"}],
        "return_value": ["x"],
    }
    found = problems(flow)
    assert "step 1 ('flow'): two prompts are called 'a'" in found
    assert any("'a' has two edges" in p for p in found)


def test_a_step_cannot_have_both_a_prompt_and_a_workflow():
    data = {"input_keys": ["topic"], "steps": [step_with(LOOP, prompt="Hello {{topic}}")]}
    with pytest.raises(SpecError) as err:
        PipelineSpec.load(data)
    assert "a step has a prompt or a workflow, not both" in str(err.value)


def test_a_later_step_reads_what_earlier_steps_made():
    first = {"name": "lists", "prompt": "List {{topic}}", "output_key": "things"}
    flow = {
        "tasks": [task("a", "About {{things}} and {{topic}}", ("write", "x"))],
        "return_value": ["x"],
    }
    assert problems(flow, first=first) == []
    flow = {"tasks": [task("a", "About {{stuff}}", ("write", "x"))], "return_value": ["x"]}
    assert problems(flow, first=first) == [
        "step 2 ('flow'): prompt 'a' reads 'stuff', which no prompt writes and no input "
        "gives (available: things, topic, x)"
    ]


# -- the rules the engine runs by ---------------------------------------------------------


def test_memory_reads_peeks_pops_and_sizes():
    memory = {"topic": "Tides", "qs": ["a", "b", "c"]}
    read = wf.MemoryInput(kind="read", key="topic")
    assert rules.take(memory, read) == "Tides"
    assert rules.take(memory, wf.MemoryInput(kind="get_all", key="topic")) == ["Tides"]
    assert rules.take(memory, wf.MemoryInput(kind="peek", key="qs", index=-1)) == "c"
    assert rules.take(memory, wf.MemoryInput(kind="size", key="qs")) == 3
    assert rules.take(memory, wf.MemoryInput(kind="pop", key="qs")) == "c"
    assert memory["qs"] == ["a", "b"]
    assert rules.take(memory, wf.MemoryInput(kind="string", key="tone", value="calm")) == "calm"
    with pytest.raises(rules.MissingValue):
        rules.take(memory, wf.MemoryInput(kind="read", key="absent"))
    assert rules.take(memory, wf.MemoryInput(kind="read", key="absent", required=False)) == ""


def test_writes_replace_and_pushes_append():
    t = wf.WorkflowTask(
        id="t",
        prompt="x",
        outputs=[
            wf.MemoryOutput(kind="write", key="last"),
            wf.MemoryOutput(kind="push", key="all"),
        ],
    )
    memory = {}
    rules.store(memory, t, "one")
    rules.store(memory, t, "two")
    assert memory == {"last": "two", "all": ["one", "two"]}


@pytest.mark.parametrize(
    ("value", "expression", "expected", "holds"),
    [
        ("yes", "Equal", "yes", True),
        ("yes ", "NotEqual", "yes", False),
        ("The answer is FINAL", "Contains", "final", True),
        (["a draft", "another"], "NotContains", "final", True),
        ("3", "GreaterThanOrEqual", "3", True),
        ("2", "GreaterThan", "3", False),
        ("2", "LessThan", "3", True),
        ("4", "LessThanOrEqual", "3", False),
        ("many", "GreaterThan", "3", False),  # not a number: the condition does not hold
    ],
)
def test_conditions(value, expression, expected, holds):
    cond = wf.Condition(
        input=wf.MemoryInput(kind="read", key="v"),
        expression=expression,
        expected=expected,
        target_if_not="x",
    )
    assert rules.holds(cond, {"v": value}) is holds


def test_the_next_task_follows_edges_then_the_list_order():
    flow = wf.WorkflowSpec.model_validate(
        {
            "tasks": [
                task("a", "x", ("push", "qs")),
                task("b", "y", ("write", "z")),
                task("c", "w", ("write", "z")),
            ],
            "edges": [
                {
                    "source": "a",
                    "target": "b",
                    "condition": {
                        "input": {"kind": "size", "key": "qs"},
                        "expression": "Equal",
                        "expected": "2",
                        "target_if_not": "a",
                    },
                }
            ],
            "return_value": ["z"],
        }
    )
    assert rules.next_task(flow, "a", {"qs": ["1"]}) == "a"
    assert rules.next_task(flow, "a", {"qs": ["1", "2"]}) == "b"
    assert rules.next_task(flow, "b", {}) == "c"  # no edge: the next in the list
    assert rules.next_task(flow, "c", {}) == wf.END
    assert flow.loop_rounds() == 2 and flow.calls_bound() == (4, False)  # a, a, b, c
    assert flow.shape() == "3 prompts, loops up to 20 prompts in all"
