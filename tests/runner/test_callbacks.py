"""Each callback as a pure function: what children a finished output makes."""

import pytest

from runner.spec import CallbackSpec, StepSpec
from runner.spec.callbacks import (
    CallbackError,
    Output,
    children_of,
    gather,
    register,
    resolve_python_callback,
)


def step(callback, output_format="text", output_key="out", **kw):
    return StepSpec(
        name="s",
        prompt="p",
        output_format=output_format,
        output_key=output_key,
        callback=CallbackSpec(**callback),
        **kw,
    )


def out(parsed, task_id=7, seq="00000003", context=None, variant=0, result=""):
    return Output(task_id, f"k{task_id}", seq, context or {"topic": "Tea"}, parsed, result, variant)


def test_default_is_one_to_one_and_keeps_the_context():
    [child] = children_of(step({"type": "default"}), out("a question?"))
    assert child.context == {"topic": "Tea", "out": "a question?"}
    assert child.parent_id == 7 and child.seq == "00000003.000000" and child.key == "t7.0"


def test_scatter_makes_one_child_per_item_under_the_item_key():
    kids = children_of(
        step({"type": "scatter", "item_key": "subtopic"}, "json_list", "subtopics"),
        out(["a", "b", "c"]),
    )
    assert [k.context for k in kids] == [{"topic": "Tea", "subtopic": x} for x in "abc"]
    assert [k.seq for k in kids] == sorted(k.seq for k in kids)  # input order is kept
    assert len({k.key for k in kids}) == 3


def test_scatter_of_an_empty_list_finishes_the_branch():
    assert children_of(step({"type": "scatter"}, "json_list"), out([])) == []


def test_scatter_of_a_non_list_fails_the_task():
    with pytest.raises(CallbackError, match="not a JSON list"):
        children_of(step({"type": "scatter"}, "json_list"), out("text"))


def test_broadcast_makes_n_copies_with_distinct_variants():
    kids = children_of(step({"type": "broadcast", "n": 4}), out("q?"))
    assert len(kids) == 4
    assert all(k.context == {"topic": "Tea", "out": "q?"} for k in kids)
    assert [k.variant for k in kids] == [0, 1, 2, 3]


def test_default_children_keep_the_copy_number_of_their_parent():
    [child] = children_of(step({"type": "default"}), out("answer", variant=2))
    assert child.variant == 2


def test_split_lines_strips_bullets_and_blank_lines():
    text = "- first\n\n2. second\n* third  \n"
    kids = children_of(step({"type": "split_lines", "item_key": "line"}), out(text))
    assert [k.context["line"] for k in kids] == ["first", "second", "third"]


def test_split_by_delimiter():
    kids = children_of(
        step({"type": "split", "delimiter": ";", "item_key": "part"}), out("a; b;;c")
    )
    assert [k.context["part"] for k in kids] == ["a", "b", "c"]


def test_pick_takes_one_field_or_fails_with_the_reason():
    s = step({"type": "pick", "field": "answer", "into": "final"}, "json_object")
    [child] = children_of(s, out({"answer": 42, "other": 1}))
    assert child.context == {"topic": "Tea", "final": 42}
    with pytest.raises(CallbackError, match="no field 'answer'"):
        children_of(s, out({"nope": 1}))


def test_aggregate_keeps_input_order_and_common_context():
    s = step({"type": "aggregate", "into": "questions"}, output_key="question")
    outputs = [
        out("q2", task_id=2, seq="00000001.000001", context={"topic": "Tea", "sub": "b"}),
        out("q1", task_id=1, seq="00000001.000000", context={"topic": "Tea", "sub": "a"}),
        out("q3", task_id=3, seq="00000002.000000", context={"topic": "Tea", "sub": "c"}),
    ]
    [child] = gather(s, 1, outputs)
    assert child.context == {"topic": "Tea", "questions": ["q1", "q2", "q3"]}


def test_aggregate_grouped_by_key():
    s = step({"type": "aggregate", "into": "qs", "group_by": "topic"}, output_key="q")
    outputs = [
        out("t1", 1, "00000000.000000", {"topic": "Tea"}),
        out("c1", 2, "00000001.000000", {"topic": "Coffee"}),
        out("t2", 3, "00000000.000001", {"topic": "Tea"}),
    ]
    kids = gather(s, 1, outputs)
    assert [(k.context["topic"], k.context["qs"]) for k in kids] == [
        ("Tea", ["t1", "t2"]),
        ("Coffee", ["c1"]),
    ]
    assert len({k.key for k in kids}) == 2


def test_aggregate_of_nothing_makes_nothing():
    assert gather(step({"type": "aggregate"}), 0, []) == []


def test_flatten_joins_every_list_into_one_input():
    s = step({"type": "flatten", "into": "subtopics"}, "json_list", "subtopics")
    outputs = [out(["a", "b"], 1, "00000001"), out(["c"], 2, "00000002")]
    [child] = gather(s, 0, outputs)
    assert child.context["subtopics"] == ["a", "b", "c"]


def test_registered_python_callback_and_unknown_name():
    @register("test_pairs")
    def pairs(step):
        return [{"pair": [o.parsed, o.parsed]} for o in step.output]

    s = step({"type": "python", "name": "test_pairs"})
    kids = gather(s, 0, [out("x", 1, "1"), out("y", 2, "2")])
    assert [k.context["pair"] for k in kids] == [["x", "x"], ["y", "y"]]
    assert kids[0].context["topic"] == "Tea"  # shared context is kept
    with pytest.raises(CallbackError, match="no Python callback is registered as 'nope'"):
        resolve_python_callback("nope")


def test_python_callbacks_are_imported_only_from_allowed_packages():
    with pytest.raises(CallbackError):
        resolve_python_callback("os:system")
    fn = resolve_python_callback("tests.integration.seed_steps:SubtopicStep")
    assert callable(fn)
