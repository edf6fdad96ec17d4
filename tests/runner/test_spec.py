"""Unit tests for runner.spec: the pipeline spec, its checks and its contexts."""

import json
from typing import get_args

import pytest

from runner.spec import (
    FAN,
    SPEC_VERSION,
    CallbackType,
    OutputFormat,
    PipelineSpec,
    Problem,
    SpecError,
    StepSpec,
)


def step(name, prompt, output_key, **extra):
    data = {"name": name, "prompt": prompt, "output_key": output_key}
    data.update(extra)
    return data


def problems_of(data):
    with pytest.raises(SpecError) as info:
        PipelineSpec.load(data)
    err = info.value
    assert str(err) == "; ".join(map(str, err.problems))
    assert isinstance(err, ValueError)
    return [str(p) for p in err.problems]


def only_problem(data):
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def full_spec():
    """A spec that uses most features: scatter, broadcast, aggregate, schema."""
    return {
        "spec_version": SPEC_VERSION,
        "name": "Questions and answers ✓",
        "description": "Subtopics, questions, answers — with unicode: 世界",
        "input_keys": ["topic"],
        "steps": [
            step(
                "subtopics",
                "List subtopics of {{ topic }} as a JSON list.",
                "subtopics",
                system="You are terse.",
                model={"provider": "openai", "name": "gpt-4o-mini"},
                params={"temperature": 0.2, "max_tokens": 500, "top_p": 0.9, "timeout": 30},
                output_format="json_list",
                callback={"type": "scatter", "item_key": "subtopic"},
            ),
            step(
                "question",
                "Ask a question about {{subtopic}} ({{topic}}).",
                "question",
                output_format="json_object",
                output_schema={"type": "object", "required": ["q"]},
                callback={"type": "pick", "field": "q", "into": "q"},
            ),
            step(
                "answer",
                "Answer: {{ q }}",
                "answer",
                callback={"type": "broadcast", "n": 3},
            ),
            step(
                "summary",
                "Summarise {{ answer }} about {{ topic }}",
                "summary",
                callback={"type": "aggregate", "into": "summaries", "group_by": "topic"},
            ),
            step("final", "{% for s in summaries %}{{ s }}\n{% endfor %}{{ topic }}", "final"),
        ],
        "inputs": [{"topic": "physics"}, {"topic": "Ökonomie"}],
    }


# -- reading and writing -------------------------------------------------------------


def test_full_spec_loads():
    spec = PipelineSpec.load(full_spec())
    assert [s.name for s in spec.steps] == ["subtopics", "question", "answer", "summary", "final"]
    assert spec.steps[0].output_format == OutputFormat.JSON_LIST
    assert spec.steps[0].output_format == "json_list"
    assert spec.steps[2].callback.n == 3


def test_json_round_trip():
    spec = PipelineSpec.load(full_spec())
    text = spec.to_json()
    again = PipelineSpec.load(text)
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    assert again.to_json() == text


def test_json_round_trip_through_bytes_and_dict():
    spec = PipelineSpec.load(full_spec())
    assert PipelineSpec.load(spec.to_json().encode("utf-8")) == spec
    assert PipelineSpec.load(spec.to_dict()) == spec
    assert PipelineSpec.load(json.loads(spec.to_json())) == spec


def test_to_json_keeps_unicode_readable():
    text = PipelineSpec.load(full_spec()).to_json()
    assert "世界" in text and "Ökonomie" in text


def test_minimal_spec_defaults_round_trip():
    spec = PipelineSpec.load({"steps": [step("a", "Say hi about {{topic}}", "greeting")]})
    data = spec.to_dict()
    assert data["spec_version"] == SPEC_VERSION
    assert data["steps"][0]["output_format"] == "text"
    assert data["steps"][0]["callback"]["type"] == "default"
    assert data["steps"][0]["params"]["temperature"] == 0.7
    assert PipelineSpec.load(spec.to_json()) == spec


def test_to_dict_is_plain_json():
    data = PipelineSpec.load(full_spec()).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert type(data["steps"][0]["output_format"]) is str


# -- problems: structure -------------------------------------------------------------


def test_empty_pipeline():
    assert problems_of({"steps": []}) == ["the pipeline has no steps: add at least one step"]
    assert problems_of({}) == ["the pipeline has no steps: add at least one step"]


def test_not_an_object():
    assert problems_of([1, 2]) == ["a pipeline spec is a JSON object with a list of steps"]
    assert problems_of("[1, 2]") == ["a pipeline spec is a JSON object with a list of steps"]


@pytest.mark.parametrize("text", ['{"steps": [', "not json", b"\xff\xfe{"])
def test_invalid_json_text(text):
    problem = only_problem(text)
    assert problem.startswith("the file is not valid JSON: ")


def test_unknown_field_in_step():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "x", colour="red")]})
    assert problem == "step 1 ('ask'): colour is not a known field"


def test_unknown_field_at_top_level():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "x")], "author": "me"})
    assert problem == "pipeline: author is not a known field"


def test_unknown_field_in_callback():
    problem = only_problem(
        {"steps": [step("ask", "{{topic}}", "x", callback={"type": "default", "count": 2})]}
    )
    assert problem == "step 1 ('ask'): callback.count is not a known field"


def test_unknown_callback_type():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "x", callback={"type": "explode"})]})
    assert problem.startswith("step 1 ('ask'): callback.type unknown callback 'explode'")
    assert "(known: default, scatter, broadcast" in problem


def test_unknown_output_format():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "x", output_format="yaml")]})
    assert problem == (
        "step 1 ('ask'): output_format unknown output format 'yaml' "
        "(known: text, json_list, json_object)"
    )


def test_missing_fields_name_the_step():
    problems = problems_of({"steps": [{"name": "ask"}]})
    assert "step 1 ('ask'): prompt is missing" in problems
    assert "step 1 ('ask'): output_key is missing" in problems


def test_missing_name_uses_the_step_number():
    problems = problems_of({"steps": [{"prompt": "hi", "output_key": "x"}]})
    assert problems == ["step 1: name is missing"]


def test_param_out_of_range():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "x", params={"temperature": 5})]})
    assert problem.startswith("step 1 ('ask'): params.temperature ")


# -- problems: meaning ---------------------------------------------------------------


def test_duplicate_step_names():
    problem = only_problem({"steps": [step("ask", "{{topic}}", "a"), step("ask", "{{a}}", "b")]})
    assert problem == (
        "step 2 ('ask'): the name is already used by step 1; give each step its own name"
    )


def test_duplicate_output_keys():
    problem = only_problem(
        {"steps": [step("one", "{{topic}}", "out"), step("two", "{{out}}", "out")]}
    )
    assert problem == "step 2 ('two'): output key 'out' is already made by step 1; choose another"


def test_bad_output_key():
    problem = only_problem({"steps": [step("one", "{{topic}}", "2 bad")]})
    assert problem.startswith("step 1 ('one'): output key '2 bad' must start with a letter")


def test_bad_input_key():
    problem = only_problem({"input_keys": ["my topic"], "steps": [step("one", "hi", "x")]})
    assert problem.startswith("input key 'my topic' must start with a letter")


def test_unsupported_spec_version():
    problem = only_problem({"spec_version": 99, "steps": [step("one", "{{topic}}", "x")]})
    assert problem.startswith("spec_version 99 is not supported")


def test_scatter_on_text_output():
    problem = only_problem(
        {"steps": [step("list", "{{topic}}", "items", callback={"type": "scatter"})]}
    )
    assert problem.startswith("step 1 ('list'): scatter needs the step's output format")
    assert "JSON list" in problem


def test_flatten_on_text_output():
    problem = only_problem(
        {"steps": [step("list", "{{topic}}", "items", callback={"type": "flatten"})]}
    )
    assert problem.startswith("step 1 ('list'): flatten needs")


def test_broadcast_without_n():
    problem = only_problem(
        {"steps": [step("ask", "{{topic}}", "q", callback={"type": "broadcast"})]}
    )
    assert problem == "step 1 ('ask'): broadcast needs n, the number of copies of each output"


def test_broadcast_n_zero_is_rejected_by_structure():
    problem = only_problem(
        {"steps": [step("ask", "{{topic}}", "q", callback={"type": "broadcast", "n": 0})]}
    )
    assert problem.startswith("step 1 ('ask'): callback.n ")


def test_pick_without_field():
    problem = only_problem(
        {
            "steps": [
                step(
                    "obj",
                    "{{topic}}",
                    "o",
                    output_format="json_object",
                    callback={"type": "pick"},
                )
            ]
        }
    )
    assert problem == "step 1 ('obj'): pick needs the field to take from the JSON object"


def test_pick_on_text_output():
    problems = problems_of(
        {"steps": [step("obj", "{{topic}}", "o", callback={"type": "pick", "field": "f"})]}
    )
    assert problems == ["step 1 ('obj'): pick needs the step's output format to be a JSON object"]


def test_split_without_delimiter_and_on_json():
    problems = problems_of(
        {
            "steps": [
                step(
                    "s",
                    "{{topic}}",
                    "o",
                    output_format="json_list",
                    callback={"type": "split"},
                )
            ]
        }
    )
    assert "step 1 ('s'): split needs a delimiter" in problems
    assert "step 1 ('s'): split works on text output; choose the text output format" in problems


def test_python_callback_without_name():
    problem = only_problem({"steps": [step("p", "{{topic}}", "o", callback={"type": "python"})]})
    assert problem == "step 1 ('p'): a Python callback needs the name it was registered under"


def test_bad_callback_key():
    problem = only_problem(
        {
            "steps": [
                step(
                    "l",
                    "{{topic}}",
                    "o",
                    output_format="json_list",
                    callback={"type": "scatter", "item_key": "my item"},
                )
            ]
        }
    )
    assert problem.startswith("step 1 ('l'): callback key 'my item' must start with a letter")


def test_schema_on_text_output():
    problem = only_problem(
        {"steps": [step("t", "{{topic}}", "o", output_schema={"type": "object"})]}
    )
    assert problem == "step 1 ('t'): a schema only applies to the 'JSON object' output format"


def test_template_syntax_error_in_prompt():
    problem = only_problem({"steps": [step("t", "Tell me about {{ topic", "o")]})
    assert problem.startswith("step 1 ('t'): the prompt is not a valid template (line 1: ")


def test_template_syntax_error_in_system_on_later_line():
    problem = only_problem({"steps": [step("t", "{{topic}}", "o", system="Be nice.\n{% if %}")]})
    assert problem.startswith("step 1 ('t'): the system is not a valid template (line 2: ")


def test_prompt_variable_not_made_by_an_earlier_step():
    problem = only_problem(
        {"steps": [step("one", "{{topic}}", "out"), step("two", "Use {{ outt }}", "res")]}
    )
    assert problem.startswith("step 2 ('two'): the prompt uses {{outt}}")
    assert "is not made by any step before this one" in problem
    assert "(available: out, topic)" in problem


def test_system_variable_not_made_by_an_earlier_step():
    problem = only_problem(
        {"steps": [step("one", "{{topic}}", "out"), step("two", "{{out}}", "r", system="{{x}}")]}
    )
    assert problem.startswith("step 2 ('two'): the system uses {{x}}")
    assert "is not made by any step before this one" in problem


def test_variable_made_by_a_later_step_is_not_available():
    problems = problems_of(
        {
            "steps": [
                step("one", "{{topic}}", "a"),
                step("two", "{{c}}", "b"),
                step("3", "{{b}}", "c"),
            ]
        }
    )
    assert len(problems) == 1
    assert problems[0].startswith("step 2 ('two'): the prompt uses {{c}}")


def test_first_step_variable_not_in_declared_inputs():
    problem = only_problem(
        {"input_keys": ["topic"], "steps": [step("one", "{{ topic }} {{ tone }}", "out")]}
    )
    assert problem == (
        "step 1 ('one'): the prompt uses {{tone}}, which is not one of the pipeline's inputs (topic)"
    )


def test_loop_variables_and_filters_are_not_missing_keys():
    spec = PipelineSpec.load(
        {
            "input_keys": ["items"],
            "steps": [
                step(
                    "one",
                    "{% for it in items %}{{ loop.index }}. {{ it | upper }}\n{% endfor %}",
                    "out",
                )
            ],
        }
    )
    assert spec.contexts() == [{"items"}]


def test_several_problems_are_all_reported():
    problems = problems_of(
        {
            "steps": [
                step("a", "{{topic}}", "x", callback={"type": "broadcast"}),
                step("a", "{{nope}}", "x"),
            ]
        }
    )
    assert len(problems) == 4, problems
    assert all(p.startswith("step ") for p in problems)


# -- contexts ------------------------------------------------------------------------


def test_first_step_keys_from_first_prompt_and_system():
    spec = PipelineSpec.load(
        {
            "steps": [
                step("a", "{{ topic }} and {{audience}}", "x", system="Tone: {{ tone }}"),
                step("b", "{{ x }}", "y"),
            ]
        }
    )
    assert spec.first_step_keys() == ["audience", "tone", "topic"]


def test_first_step_keys_prefers_declared_inputs():
    spec = PipelineSpec.load(
        {"input_keys": ["topic", "extra"], "steps": [step("a", "{{ topic }}", "x")]}
    )
    assert spec.first_step_keys() == ["topic", "extra"]


def test_first_step_keys_without_steps():
    assert PipelineSpec(steps=[]).first_step_keys() == []


def test_default_callback_adds_output_key():
    spec = PipelineSpec.load(
        {"steps": [step("a", "{{topic}}", "x"), step("b", "{{x}}{{topic}}", "y")]}
    )
    assert spec.contexts() == [{"topic"}, {"topic", "x"}]


def test_scatter_adds_item_key():
    spec = PipelineSpec.load(
        {
            "steps": [
                step(
                    "list",
                    "{{topic}}",
                    "subtopics",
                    output_format="json_list",
                    callback={"type": "scatter", "item_key": "subtopic"},
                ),
                step("ask", "{{ subtopic }} {{ topic }}", "q"),
            ]
        }
    )
    contexts = spec.contexts()
    assert contexts[0] == {"topic"}
    assert "subtopic" in contexts[1]
    assert contexts[1] == {"topic", "subtopic"}


def test_scatter_without_item_key_uses_output_key():
    spec = PipelineSpec.load(
        {
            "steps": [
                step(
                    "list",
                    "{{topic}}",
                    "sub",
                    output_format="json_list",
                    callback={"type": "scatter"},
                ),
                step("ask", "{{ sub }}", "q"),
            ]
        }
    )
    assert spec.contexts()[1] == {"topic", "sub"}


def test_aggregate_resets_context_to_into():
    spec = PipelineSpec.load(
        {
            "steps": [
                step("ask", "{{topic}}", "q", callback={"type": "broadcast", "n": 2}),
                step("answer", "{{q}}", "a", callback={"type": "aggregate", "into": "answers"}),
                step("judge", "{{ answers }}", "verdict"),
            ]
        }
    )
    contexts = spec.contexts()
    assert contexts[1] == {"topic", "q"}
    assert contexts[2] == {"answers"}


def test_aggregate_with_group_by_keeps_group_key():
    spec = PipelineSpec.load(
        {
            "steps": [
                step("ask", "{{topic}}", "q"),
                step(
                    "answer",
                    "{{q}}",
                    "a",
                    callback={"type": "aggregate", "into": "answers", "group_by": "topic"},
                ),
                step("judge", "{{ answers }} {{ topic }}", "verdict"),
            ]
        }
    )
    assert spec.contexts()[2] == {"answers", "topic"}


def test_after_aggregate_earlier_keys_are_gone():
    problem = only_problem(
        {
            "steps": [
                step("ask", "{{topic}}", "q"),
                step("answer", "{{q}}", "a", callback={"type": "aggregate", "into": "answers"}),
                step("judge", "{{ answers }} {{ q }}", "verdict"),
            ]
        }
    )
    assert problem.startswith("step 3 ('judge'): the prompt uses {{q}}")
    assert "(available: answers)" in problem


def test_aggregate_without_into_uses_output_key():
    spec = PipelineSpec.load(
        {
            "steps": [
                step("ask", "{{topic}}", "q", callback={"type": "aggregate"}),
                step("judge", "{{ q }}", "v"),
            ]
        }
    )
    assert spec.contexts()[1] == {"q"}


def test_pick_adds_into():
    spec = PipelineSpec.load(
        {
            "steps": [
                step(
                    "obj",
                    "{{topic}}",
                    "o",
                    output_format="json_object",
                    callback={"type": "pick", "field": "question", "into": "question"},
                ),
                step("ask", "{{ question }}", "a"),
            ]
        }
    )
    assert spec.contexts()[1] == {"topic", "question"}


def test_python_callback_context():
    unknown = PipelineSpec.load(
        {
            "steps": [
                step("a", "{{topic}}", "x", callback={"type": "python", "name": "mine"}),
                step("b", "{{ anything }}", "y"),
            ]
        }
    )
    assert unknown.contexts() == [{"topic"}, None]
    known = PipelineSpec.load(
        {
            "steps": [
                step(
                    "a",
                    "{{topic}}",
                    "x",
                    callback={"type": "python", "name": "mine", "produces": ["p", "q"]},
                ),
                step("b", "{{ p }} {{ q }}", "y"),
            ]
        }
    )
    assert known.contexts() == [{"topic"}, {"p", "q"}]


def test_full_spec_contexts():
    contexts = PipelineSpec.load(full_spec()).contexts()
    assert contexts == [
        {"topic"},
        {"topic", "subtopic"},
        {"topic", "subtopic", "q"},
        {"topic", "subtopic", "q", "answer"},
        {"summaries", "topic"},
    ]


def test_fan_of_each_step():
    spec = PipelineSpec.load(full_spec())
    assert [f"{s.name}: {s.fan}" for s in spec.steps] == [
        "subtopics: 1 → N",
        "question: 1 → 1",
        "answer: 1 → n",
        "summary: N → 1",
        "final: 1 → 1",
    ]
    assert set(FAN) == set(get_args(CallbackType))
    assert StepSpec(name="s", prompt="p", output_key="o").fan == "1 → 1"


# -- check_inputs --------------------------------------------------------------------


def test_check_inputs_ok():
    spec = PipelineSpec.load(full_spec())
    assert spec.check_inputs([{"topic": "a"}, {"topic": "b", "extra": 1}]) == []


def test_check_inputs_names_missing_key():
    spec = PipelineSpec.load({"steps": [step("a", "{{ topic }} for {{ audience }}", "x")]})
    problems = spec.check_inputs([{"topic": "a", "audience": "kids"}, {"topic": "b"}, {}])
    assert problems == [
        "input 2 has no value for audience",
        "input 3 has no value for audience, topic",
    ]


def test_check_inputs_empty_or_not_a_list():
    spec = PipelineSpec.load({"steps": [step("a", "{{ topic }}", "x")]})
    assert spec.check_inputs([]) == ["give at least one input"]
    assert spec.check_inputs({"topic": "a"}) == ["give at least one input"]


def test_check_inputs_row_not_a_dict_and_bad_key():
    spec = PipelineSpec.load({"steps": [step("a", "{{ topic }}", "x")]})
    problems = spec.check_inputs(["topic", {"topic": "a", "bad key": 1}])
    assert problems[0] == "input 1 is not a set of key/value pairs"
    assert str(problems[1]).startswith("input 2: key 'bad key' must start with a letter")


def test_check_inputs_caps_the_number_of_problems():
    spec = PipelineSpec.load({"steps": [step("a", "{{ topic }}", "x")]})
    problems = spec.check_inputs([{}] * 100)
    assert len(problems) == 21
    assert problems[-1] == "(more problems not shown)"


# -- bugs found while writing these tests (see the report) ----------------------------


def test_aggregate_group_by_must_be_a_key_of_the_step():
    """BUG: group_by is not checked against the step's context.

    An aggregate grouped by a key its tasks do not carry is accepted, and
    contexts() then tells the next step that the made-up key is available.
    """
    data = {
        "steps": [
            step("ask", "{{topic}}", "q"),
            step(
                "answer",
                "{{q}}",
                "a",
                callback={"type": "aggregate", "into": "answers", "group_by": "nonexistent"},
            ),
            step("judge", "{{ answers }} {{ nonexistent }}", "v"),
        ]
    }
    with pytest.raises(SpecError) as info:
        PipelineSpec.load(data)
    assert any(
        str(p).startswith("step 2 ('answer'): ") and "nonexistent" in p for p in info.value.problems
    ), info.value.problems


def test_output_key_may_not_shadow_an_input_key():
    """BUG: a step whose output key is one of the pipeline's inputs is accepted.

    Duplicate output keys between steps are refused because the later one would
    silently replace the earlier value in the context; an output key equal to an
    input key does the same to the seed input, but passes.
    """
    data = {
        "input_keys": ["topic"],
        "steps": [step("one", "{{topic}}", "topic"), step("two", "{{topic}}", "x")],
    }
    with pytest.raises(SpecError) as info:
        PipelineSpec.load(data)
    assert any("topic" in p and str(p).startswith("step 1 ('one')") for p in info.value.problems)


# -- problems as data ------------------------------------------------------------------

# Bad specs that between them make every problem the spec checks know, with the
# (step, field, code) each problem must carry. The designer's tests use them too.
BAD_SPECS = [
    ({"steps": []}, [(None, "", "no_steps")]),
    (
        {"spec_version": 2, "input_keys": ["bad key"], "steps": [step("a", "{{topic}}", "x")]},
        [
            (None, "spec_version", "spec_version"),
            (None, "input_keys", "bad_input_key"),
            (0, "prompt", "not_an_input"),
        ],
    ),
    (
        {
            "steps": [
                step("a", "{{topic}}", "x", callback={"type": "scatter"}),
                step("a", "{{x}}", "x", system="{{nope}}"),
                step("b", "{{x}}", "bad key"),
            ]
        },
        [
            (0, "callback", "scatter_needs_list"),
            (1, "name", "duplicate_name"),
            (1, "output_key", "duplicate_output_key"),
            (1, "system", "unknown_variable"),
            (2, "output_key", "bad_output_key"),
        ],
    ),
    (
        {"input_keys": ["topic"], "steps": [step("one", "{{topic}}", "topic")]},
        [(0, "output_key", "output_key_is_input")],
    ),
    (
        {
            "steps": [
                step("f", "{{topic}}", "f", callback={"type": "flatten"}),
                step("b", "{{f}}", "b", callback={"type": "broadcast"}),
                step("s", "{{b}}", "s", output_format="json_list", callback={"type": "split"}),
                step("p", "{{s}}", "p", callback={"type": "pick"}),
                step(
                    "k",
                    "{{p}}",
                    "k",
                    output_format="json_list",
                    callback={"type": "scatter", "item_key": "bad key"},
                ),
                step("y", "{{p}}", "y", callback={"type": "python"}),
            ]
        },
        [
            (0, "callback", "flatten_needs_list"),
            (1, "n", "broadcast_needs_n"),
            (2, "delimiter", "split_needs_delimiter"),
            (2, "callback", "split_needs_text"),
            (3, "field", "pick_needs_field"),
            (3, "callback", "pick_needs_object"),
            (4, "item_key", "bad_callback_key"),
            (5, "callback", "python_needs_name"),
        ],
    ),
    (
        {
            "steps": [
                step("ask", "{{topic}}", "q"),
                step("agg", "{{q}}", "a", callback={"type": "aggregate", "group_by": "nope"}),
                step("obj", "{{a", "o", output_schema={"type": "object"}),
            ]
        },
        [
            (1, "group_by", "unknown_group_by"),
            (2, "output_format", "schema_needs_object"),
            (2, "prompt", "bad_template"),
        ],
    ),
    (
        {
            "steps": [
                step(
                    "ask",
                    "{{topic}}",
                    "q",
                    keep=[{"field": "nope", "op": ">=", "value": "1"}],
                    dedup={"field": "gone"},
                ),
                {
                    "name": "grade",
                    "judge": {"fields": ["missing"], "criteria": [{"key": "score"}]},
                    "callback": {"type": "broadcast", "n": 2},
                },
                {
                    "name": "both",
                    "output_key": "b",
                    "judge": {"fields": ["q"], "criteria": [{"key": "s2"}]},
                    "workflow": {
                        "tasks": [{"id": "t", "prompt": "{{q}}", "outputs": [{"key": "w"}]}],
                        "return_value": ["w"],
                    },
                },
            ]
        },
        [
            (0, "keep", "unknown_keep_field"),
            (0, "dedup", "unknown_dedup_field"),
            (1, "callback", "judge_needs_default"),
            (1, "judge", "unknown_judge_field"),
            (2, "judge", "judge_and_workflow"),
        ],
    ),
    ("not json {", [(None, "", "not_json")]),
    ([1, 2], [(None, "", "not_an_object")]),
    (
        {
            "colour": "red",
            "steps": [
                {"name": "a", "prompt": "x", "output_key": "a", "colour": "red"},
                {"name": "b", "output_key": "b", "callback": {"type": "nope"}},
                step("c", "x", "c", output_format="xml", params={"temperature": 5}),
                step("d", "x", "d", callback={"type": "broadcast", "n": 0}),
            ],
        },
        [
            (None, "colour", "unknown_field"),
            (0, "colour", "unknown_field"),
            (1, "prompt", "missing"),
            (1, "callback", "unknown_callback"),
            (2, "temperature", "invalid"),
            (2, "output_format", "unknown_output_format"),
            (3, "n", "invalid"),
        ],
    ),
]


def spec_problems(data):
    """The Problems of `data`: from load() when its structure is wrong, else problems()."""
    try:
        return PipelineSpec.load(data).problems()
    except SpecError as exc:
        return exc.problems


@pytest.mark.parametrize(("data", "expected"), BAD_SPECS)
def test_each_problem_names_its_step_field_and_code(data, expected):
    problems = spec_problems(data)
    assert all(isinstance(p, Problem) for p in problems)
    found = [(p.step, p.field, p.code) for p in problems]
    assert sorted(found, key=repr) == sorted(expected, key=repr)


@pytest.mark.parametrize(("data", "expected"), BAD_SPECS)
def test_a_problem_reads_as_its_sentence_with_the_step_named(data, expected):
    raw = json.loads(data) if isinstance(data, str) and data.startswith("{") else data
    for p in spec_problems(data):
        assert str(p) == p.message and p == p.message and p.detail in p
        if p.step is None:
            assert p.message == p.detail
            continue
        name = raw["steps"][p.step].get("name")
        assert p.step_name == (name or "")
        where = f"step {p.step + 1}" + (f" ('{name}')" if name else "")
        assert p.message == f"{where}: {p.detail}"


def test_problem_params_hold_the_values():
    (p,) = PipelineSpec.model_validate(
        {"steps": [step("a", "{{topic}}", "t"), step("b", "{{nope}} {{t}}", "x")]}
    ).problems()
    assert (p.step, p.field, p.code) == (1, "prompt", "unknown_variable")
    assert p.params == {"part": "prompt", "variable": "nope", "available": ["t", "topic"]}
    assert p.message == (
        "step 2 ('b'): the prompt uses {{nope}}, which is not made by any step before "
        "this one (available: t, topic)"
    )
    with pytest.raises(SpecError) as info:
        PipelineSpec.load({"steps": [step("a", "{{topic}}", "t"), step("a", "{{t}}", "u")]})
    (dup,) = info.value.problems
    assert (dup.code, dup.params) == ("duplicate_name", {"other": 0})
    assert (
        str(info.value)
        == "step 2 ('a'): the name is already used by step 1; give each step its own name"
    )


def test_input_problems_are_problems_of_the_inputs():
    spec = PipelineSpec.load({"steps": [step("a", "{{ topic }}", "x")]})
    problems = spec.check_inputs(["topic", {"bad key": 1}])
    assert [(p.step, p.field, p.code) for p in problems] == [
        (None, "inputs", "input_not_object"),
        (None, "inputs", "input_missing"),
        (None, "inputs", "bad_input_row_key"),
    ]
    assert problems[1].params == {"row": 2, "keys": ["topic"]}
    assert spec.check_inputs([])[0].code == "no_inputs"
    assert spec.check_inputs([{}] * 30)[-1].code == "more_problems"


def test_spec_error_takes_bare_sentences_too():
    err = SpecError(["something is off", Problem.general("", "no_steps", "no steps")])
    assert [p.code for p in err.problems] == ["other", "no_steps"]
    assert str(err) == "something is off; no steps"


def test_a_nul_character_in_a_spec_or_an_input_is_refused_with_where_it_is():
    # No database text keeps a NUL (PostgreSQL refuses it): said before the run is written.
    data = full_spec()
    data["steps"][1]["system"] = "Be\x00 brief."
    assert only_problem(data) == (
        "step 2 ('question'): system holds a NUL character (\\u0000), which cannot be "
        "stored; remove it"
    )
    data = full_spec()
    data["description"] = json.loads('"made \\u0000 here"')
    assert only_problem(json.dumps(data)).startswith("description holds a NUL character")
    spec = PipelineSpec.load(full_spec())
    problems = spec.check_inputs(
        [{"topic": "fine"}, {"topic": "a\x00b"}, {"topic": "c", "meta": {"tags": ["x", "y\x00"]}}]
    )
    assert problems == [
        "input 2: topic holds a NUL character (\\u0000), which cannot be stored; remove it",
        "input 3: meta.tags[1] holds a NUL character (\\u0000), which cannot be stored; remove it",
    ]
