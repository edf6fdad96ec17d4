"""runner.dria: the seed's names build our spec; mistakes are told in plain words."""

import pytest
from pydantic import BaseModel

from runner.dria import (
    ConditionBuilder,
    Dria,
    Edge,
    Expression,
    GetAll,
    InputUsedAsValue,
    Operator,
    Peek,
    PipelineBuilder,
    PipelineConfig,
    Pop,
    Push,
    Read,
    Size,
    StepTemplate,
    StepView,
    String,
    TaskInput,
    Workflow,
    WorkflowBuilder,
    Write,
    parse_json,
)
from runner.spec import PipelineSpec, SpecError
from runner.spec import workflow as wf
from runner.spec.callbacks import Output, StepResult, gather
from tests.integration import test_dria_seed as seed


def one_prompt(prompt, key="out", **kwargs):
    b = WorkflowBuilder(**kwargs)
    b.generative_step(id="p", prompt=prompt, outputs=[Write.new(key)])
    return b


# -- the seed's example --------------------------------------------------------------------


def test_the_seed_pipeline_becomes_a_scatter_spec():
    pipeline = seed.BasicPipeline(Dria()).build("Write a haiku")
    spec = pipeline.spec
    first, second = spec.steps
    assert [s.name for s in spec.steps] == ["FirstPipelineStep", "SecondPipelineStep"]
    # scatter: each item under the next step's input name; the list is asked as JSON
    assert first.callback.type == "scatter" and first.callback.item_key == "instruction"
    assert first.output_format == "json_list" and first.output_key == "variations"
    assert second.output_key == "output" and second.callback.type == "default"
    assert spec.inputs == [{"instruction": "Write a haiku"}]
    assert spec.record_fields() == ["instruction", "output"]
    assert PipelineSpec.load(pipeline.to_json()) == spec  # round-trips like any spec


def test_pipeline_builder_takes_the_seeds_arguments():
    for args in [(), (Dria(),), (PipelineConfig(), Dria()), ("Named",)]:
        p = PipelineBuilder(*args)
        p << seed.SecondPipelineStep  # a class is made into a step
        assert p.input(instruction="x").build().spec.inputs == [{"instruction": "x"}]
    assert PipelineBuilder("Named").name == "Named"
    many = PipelineBuilder() << seed.SecondPipelineStep()
    assert many.input([{"instruction": "a"}, {"instruction": "b"}]).inputs == [
        {"instruction": "a"},
        {"instruction": "b"},
    ]
    with pytest.raises(TypeError, match="either as keyword arguments or as a list"):
        many.input([{"instruction": "a"}], instruction="b")
    with pytest.raises(TypeError, match="only StepTemplate steps"):
        PipelineBuilder() << "step"
    with pytest.raises(ValueError, match="no steps"):
        PipelineBuilder().build()


# -- inputs and outputs ----------------------------------------------------------------------


def test_every_input_and_output_kind():
    b = WorkflowBuilder()
    b.generative_step(
        id="ask",
        prompt="{{topic}} {{questions}} {{first}} {{last}} {{n}} {{style}}",
        inputs=[
            Read.new("topic", True),
            GetAll.new("questions", False),
            Peek.new("questions", -1, False),
            Pop.new("stack", False),
            Size.new("questions", True),
            String.new("style", "formal", True),  # the seed's third argument is accepted
        ],
        outputs=[Push.new("questions"), Write.new("last_question")],
    )
    task = b.build().spec.tasks[0]
    assert [(i.kind, i.key, i.index, i.value, i.required) for i in task.inputs] == [
        ("read", "topic", None, None, True),
        ("get_all", "questions", None, None, False),
        ("peek", "questions", -1, None, False),
        ("pop", "stack", None, None, False),
        ("size", "questions", None, None, True),
        ("string", "style", None, "formal", True),
    ]
    assert [(o.kind, o.key) for o in task.outputs] == [
        ("push", "questions"),
        ("write", "last_question"),
    ]
    assert String.new("style", "formal").value == "formal"
    with pytest.raises(TypeError, match="index must be a whole number"):
        Peek.new("questions", "first", True)
    with pytest.raises(TypeError, match="inputs= takes Read.new"):
        WorkflowBuilder().generative_step(id="x", prompt="y", inputs=["topic"])
    with pytest.raises(TypeError, match="outputs= takes Write.new"):
        WorkflowBuilder().generative_step(id="x", prompt="y", outputs=["topic"])


def test_both_template_spacings_read_memory():
    b = WorkflowBuilder()
    b.generative_step(id="a", prompt="{{topic}} and {{ style }}", outputs=[Write.new("x")])
    assert b.build().input_keys() == ["style", "topic"]


def test_a_schema_makes_a_json_object_with_its_schema():
    class Answer(BaseModel):
        answer: str
        confidence: float

    b = WorkflowBuilder()
    b.generative_step(id="a", prompt="Answer {{q}}", outputs=[Write.new("a")], schema=Answer)
    task = b.build().spec.tasks[0]
    assert task.output_format == "json_object"
    assert set(task.output_schema["properties"]) == {"answer", "confidence"}
    with pytest.raises(TypeError, match="pydantic model class"):
        WorkflowBuilder().generative_step(id="a", prompt="x", schema=str)


def test_a_step_without_outputs_writes_under_its_id():
    b = WorkflowBuilder()
    b.generative_step(id="draft", prompt="Draft {{topic}}")
    b.generative_step(prompt="Again {{draft}}")  # no id: the seed numbers it
    spec = b.build().spec
    assert [t.outputs[0].key for t in spec.tasks] == ["draft", "task_1"]
    assert spec.return_value == ["task_1"]  # no set_return_value: what the last prompt writes


def test_unsupported_operators_and_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="FUNCTION_CALLING is not supported"):
        WorkflowBuilder().generative_step(prompt="x", operator=Operator.FUNCTION_CALLING)
    b = one_prompt("x")
    with pytest.raises(ValueError, match="'p': a prompt with this id already exists"):
        b.generative_step(id="p", prompt="y")
    with pytest.raises(ValueError, match="give the prompt"):
        WorkflowBuilder().generative_step(id="q")
    # the seed's positional order (operator first) works too
    b.generative_step(Operator.GENERATION, "Hello {{name}}", id="q")
    assert b.build().spec.tasks[1].prompt == "Hello {{name}}"


# -- conditions, edges, limits, return values -------------------------------------------------


def test_conditions_and_edges_make_a_bounded_loop():
    b = WorkflowBuilder()
    b.generative_step(
        id="ask",
        prompt="A question on {{topic}}, not {{questions}}",
        inputs=[GetAll.new("questions", False)],
        outputs=[Push.new("questions")],
    )
    b.flow(
        [
            Edge(
                source="ask",
                target="_end",
                condition=ConditionBuilder.build(
                    input=Size.new("questions", True),
                    expression=Expression.GREATER_THAN_OR_EQUAL,
                    expected=3,
                    target_if_not="ask",
                ),
            )
        ]
    )
    b.set_return_value("questions")
    spec = b.build().spec
    c = spec.edges[0].condition
    assert (c.input.kind, c.expression, c.expected, c.target_if_not) == (
        "size",
        "GreaterThanOrEqual",
        "3",
        "ask",
    )
    assert spec.has_loop() and spec.loop_rounds() == 3
    assert spec.output_format() == "json_list"


def test_condition_mistakes_in_plain_words():
    with pytest.raises(ValueError, match="HAVE_SIMILAR .* not supported"):
        ConditionBuilder.build(
            input=Read.new("a", True), expression=Expression.HAVE_SIMILAR, expected="x",
            target_if_not="_end",
        )  # fmt: skip
    with pytest.raises(TypeError, match="takes what it reads"):
        ConditionBuilder.build(
            input="a", expression=Expression.EQUAL, expected="x", target_if_not="_end"
        )


def test_edges_with_fallbacks_and_their_mistakes():
    b = WorkflowBuilder()
    b.generative_step(id="draft", prompt="Draft {{topic}}", outputs=[Write.new("draft")])
    b.generative_step(id="safe", prompt="Short draft on {{topic}}", outputs=[Write.new("draft")])
    with pytest.raises(ValueError, match="an edge starts at 'nope', which is no generative_step"):
        b.flow([Edge(source="nope", target="_end")])
    with pytest.raises(ValueError, match="goes to 'missing', which is no generative_step"):
        b.flow([Edge(source="draft", target="missing")])
    b.flow(
        [
            Edge(source="draft", target="_end", fallback="safe"),
            Edge(source="safe", target="_end"),
        ]
    )
    spec = b.build().spec
    assert spec.edge_from("draft").fallback == "safe"
    assert spec.ways_out("draft") == [("_end", False), ("safe", False)]


def test_limits_and_their_step_overrides():
    b = one_prompt("Write about {{topic}}")
    b.set_max_steps(5)
    b.set_max_time(30)
    b.set_max_tokens(200)
    spec = b.build().spec
    assert (spec.max_steps, spec.max_time, spec.max_tokens) == (5, 30, 200)
    b.set_max_steps(0)
    with pytest.raises(ValueError, match="max_steps"):
        b.build()

    class Limited(StepTemplate):
        def create_workflow(self, topic):
            return one_prompt("Write about {{topic}}").build()

    step = Limited().set_workflow_params(max_steps=2, max_tokens=50)
    flow = (PipelineBuilder() << step).input(topic="x").build().spec.steps[0].workflow
    assert (flow.max_steps, flow.max_tokens) == (2, 50)


def test_return_values_one_or_several_and_the_unwritten_one():
    b = WorkflowBuilder()
    b.generative_step(id="d", prompt="Draft {{topic}}", outputs=[Write.new("draft")])
    b.generative_step(id="r", prompt="Revise {{draft}}", outputs=[Write.new("final")])
    with pytest.raises(
        ValueError, match=r"set_return_value\('answer'\): no generative_step writes"
    ):
        b.set_return_value("answer")
    b.set_return_value(["draft", "final"])

    class Essay(StepTemplate):
        def create_workflow(self, topic):
            return b.build()

    spec = (PipelineBuilder() << Essay()).input(topic="Bees").build().spec
    assert spec.steps[0].returns_object and spec.steps[0].output_format == "json_object"
    assert spec.record_fields() == ["topic", "draft", "final"]  # each key under its own name


def test_build_is_idempotent_and_the_builder_goes_on():
    b = one_prompt("Write about {{topic}}")
    first, again = b.build(), b.build()
    assert isinstance(first, Workflow) and first.to_dict() == again.to_dict()
    b.generative_step(id="more", prompt="More on {{out}}", outputs=[Write.new("more")])
    assert len(b.build().spec.tasks) == 2 and len(first.spec.tasks) == 1
    with pytest.raises(ValueError, match="no generative_step"):
        WorkflowBuilder().build()


# -- what create_workflow's arguments are --------------------------------------------------------


class Shouting(StepTemplate):
    def create_workflow(self, instruction: str) -> Workflow:
        return one_prompt(instruction.upper()).build()


@pytest.mark.parametrize(
    "use, label",
    [
        (lambda x: x.upper(), ".upper()"),
        (lambda x: len(x), "len()"),
        (lambda x: x == "a", "=="),
        (lambda x: bool(x), "a truth test"),
        (lambda x: list(x), "a loop"),
        (lambda x: x[0], "indexing"),
        (lambda x: "a" in x, "'in'"),
        (lambda x: x.split(","), ".split()"),
    ],
)
def test_an_input_used_as_a_value_names_the_step_and_the_argument(use, label):
    class Step(StepTemplate):
        def create_workflow(self, instruction: str) -> Workflow:
            use(instruction)
            return one_prompt("{{instruction}}").build()

    with pytest.raises(InputUsedAsValue) as err:
        PipelineBuilder() << Step()
    text = str(err.value)
    assert "step 'Step'" in text and "argument 'instruction'" in text and label in text


def test_an_input_formats_as_its_template_variable():
    class Formatting(StepTemplate):
        def create_workflow(self, topic, style="plain"):
            prompt = f"Write about {topic} " + "in a " + style + " way. Also: " + topic
            return one_prompt(prompt + " %s" % topic).build()  # noqa: UP031

    step = Formatting()
    assert step.workflow.spec.tasks[0].prompt == (
        "Write about {{topic}} in a plain way. Also: {{topic}} {{topic}}"
    )
    assert step.input_names == ["topic"]  # an argument with a default is a real value
    assert Formatting(style="bold").workflow.spec.tasks[0].prompt.count("bold") == 1


def test_memory_maps_to_the_tasks_inputs():
    class Renamed(StepTemplate):
        def create_workflow(self, subject):
            b = WorkflowBuilder({"topic": subject}, style="formal")
            b.generative_step(
                id="w",
                prompt="Write about {{topic}} in a {{style}} tone",
                outputs=[Write.new("text")],
            )
            b.generative_step(
                id="c", prompt="Check {{text}}", inputs=[Read.new("topic", True)],
                outputs=[Write.new("check")],
            )  # fmt: skip
            return b.build()

    w, c = Renamed().workflow.spec.tasks
    assert [(i.kind, i.key, i.var, i.value) for i in w.inputs] == [
        ("read", "subject", "topic", None),  # {{topic}} reads the input 'subject'
        ("string", "style", "style", "formal"),  # a fixed text is a literal
    ]
    assert [(i.kind, i.key, i.var) for i in c.inputs] == [("read", "subject", "topic")]
    assert Renamed().workflow.input_keys() == ["subject"]
    assert String.new("topic", Renamed().workflow and _placeholder()).kind == "read"


def _placeholder():
    from runner.dria.workflows import InputPlaceholder

    return InputPlaceholder("subject", "S")


def test_fixed_lists_and_written_memory_are_refused():
    b = WorkflowBuilder(examples=["a", "b"])
    b.generative_step(id="x", prompt="Like {{examples}}", outputs=[Write.new("y")])
    with pytest.raises(ValueError, match="memory 'examples' holds a fixed list"):
        b.build()
    b = WorkflowBuilder(draft="first")
    b.generative_step(id="x", prompt="Improve {{draft}}", outputs=[Write.new("draft")])
    with pytest.raises(ValueError, match="starts with a fixed value and a prompt also writes it"):
        b.build()
    with pytest.raises(ValueError, match="holds a int"):
        WorkflowBuilder(n=3)
    assert len(WorkflowBuilder(questions=[]).memory) == 1  # an empty start is fine


# -- callbacks and how steps join -----------------------------------------------------------------


class Question(StepTemplate):
    def create_workflow(self, topic):
        return one_prompt("A question on {{topic}}", key="question").build()


class Answer(StepTemplate):
    def create_workflow(self, query):
        return one_prompt("Answer {{query}}", key="answer").build()


class Grade(StepTemplate):
    def create_workflow(self, answers):
        return one_prompt("Grade {{answers}}", key="grade").build()


def test_broadcast_keeps_n_and_the_next_step_reads_the_return_key_under_its_name():
    spec = (PipelineBuilder() << Question().broadcast(3) << Answer()).input(topic="t").build().spec
    q, a = spec.steps
    assert q.callback.type == "broadcast" and q.callback.n == 3
    assert [(i.key, i.var) for i in a.workflow.tasks[0].inputs] == [("question", "query")]
    assert spec.record_fields() == ["topic", "question", "answer"]
    with pytest.raises(TypeError):
        Question().broadcast()  # the seed dropped n: not here
    with pytest.raises(ValueError, match="broadcast\\(n\\) needs n"):
        Question().broadcast(0)


def test_aggregate_collects_into_the_next_steps_input():
    p = PipelineBuilder() << Question() << Answer().aggregate() << Grade()
    spec = p.input(topic="t").build().spec
    assert spec.steps[1].callback.type == "aggregate" and spec.steps[1].callback.into == "answers"
    assert spec.record_fields() == ["answers", "grade"]


def test_set_models_become_the_model_and_its_fallbacks():
    spec = (
        (PipelineBuilder() << Question().set_models(["gpt-4o", "gpt-4o-mini"]))
        .input(topic="t")
        .build()
        .spec
    )
    assert spec.steps[0].model.name == "gpt-4o"
    assert spec.steps[0].model.fallbacks == ["gpt-4o-mini"]


def test_an_unclear_join_asks_for_a_callback():
    class Two(StepTemplate):
        def create_workflow(self, a, b):
            return one_prompt("{{a}} {{b}}").build()

    with pytest.raises(
        ValueError, match="takes several inputs \\(a, b\\).*callback\\(self, step\\)"
    ):
        (PipelineBuilder() << Question() << Two()).input(topic="t").build()


def test_spec_problems_are_told_by_the_spec():
    class Again(StepTemplate):
        def create_workflow(self, question):
            return one_prompt("Rewrite {{question}}", key="topic").build()

    with pytest.raises(SpecError, match="output key 'topic' is already one of the pipeline's"):
        (PipelineBuilder() << Question() << Again()).input(topic="t").build()


def test_a_custom_callback_sees_the_seeds_step_and_returns_task_inputs():
    spec = (
        (PipelineBuilder() << seed.SubtopicStep() << seed.QuestionStep())
        .input([{"topic": "a"}, {"topic": "b"}])
        .build()
        .spec
    )
    cb = spec.steps[0].callback
    assert cb.type == "python" and cb.name == "tests.integration.test_dria_seed:SubtopicStep"
    outputs = [
        Output(1, "in:0", "00000000", {"topic": "a"}, '["x", "y"]', '["x", "y"]'),
        Output(2, "in:1", "00000001", {"topic": "b"}, '["z"]', '["z"]'),
    ]
    children = gather(spec.steps[0], 0, outputs)
    assert [c.context["subtopics"] for c in children] == [["x", "y", "z"]]

    seen = {}

    class Looking(StepTemplate):
        def create_workflow(self, topic):
            return one_prompt("{{topic}}").build()

        def callback(self, step):
            seen["step"] = step
            return [TaskInput(topic=o.task_input.topic + "!") for o in step.output]

    made = Looking().callback(StepResult("Looking", 0, "out", outputs))
    assert made == [{"topic": "a!"}, {"topic": "b!"}]
    view = seen["step"]
    assert isinstance(view, StepView) and view.output[0].result == '["x", "y"]'
    assert [i.topic for i in view.input] == ["a", "b"]
    with pytest.raises(ValueError, match="defines callback\\(self, step\\).*drop .scatter\\(\\)"):
        Looking().scatter()
    with pytest.raises(ValueError, match="workers import its class, so define it at module level"):
        (PipelineBuilder() << Looking()).input(topic="t").build()
    with pytest.raises(ValueError, match="custom\\(\\) needs a callback"):
        Question().custom()
    assert seed.SubtopicStep().custom().has_custom_callback()


def test_task_input_and_parse_json_as_the_seed_has_them():
    t = TaskInput(**{"subtopics": ["a"]})
    assert t.subtopics == ["a"] and t.dict() == {"subtopics": ["a"]} and dict(t) == t
    with pytest.raises(AttributeError):
        t.missing  # noqa: B018
    assert parse_json('Here: ["a", "b"]') == ["a", "b"]
    assert parse_json('{"a": 1}') == {"a": 1}
    assert parse_json(["already"]) == ["already"]


def test_create_workflow_must_return_a_workflow():
    class Forgot(StepTemplate):
        def create_workflow(self, topic):
            return one_prompt("{{topic}}")  # the builder, not built: accepted

    assert isinstance(Forgot().workflow, Workflow)

    class Wrong(StepTemplate):
        def create_workflow(self, topic):
            return "prompt"

    with pytest.raises(TypeError, match="create_workflow must return a Workflow"):
        Wrong().workflow  # noqa: B018
    assert wf.END == "_end"
