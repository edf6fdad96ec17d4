"""The seed's own example, with only its imports changed, through a real worker.

The classes below are the seed page's (FirstPipelineStep, SecondPipelineStep,
BasicPipeline) with the lines the page lost filled in the obvious way. Workers
import the custom-callback step from this module (tests is an allowed package).
"""

# The seed's code as written: its star import and its typing spellings.
# ruff: noqa: F403, F405, UP006, UP007, UP035

from typing import List, Union

import pytest

from runner.dria import *  # was: from dria_workflows import *
from runner.dria import (  # was: from dria.client import Dria; from dria.pipelines import ...
    Dria,
    Pipeline,
    PipelineBuilder,
    StepTemplate,
)
from runner.dria.run import DriaRunError
from runner.models import Run, Task

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


# -- the seed page, imports changed ---------------------------------------------------


class FirstPipelineStep(StepTemplate):
    def create_workflow(self, instruction: str) -> Workflow:
        # Create a workflow builder
        builder = WorkflowBuilder(instruction=instruction)

        # Add a step to your workflow
        builder.generative_step(
            id="generate_variations",
            prompt="Rewrite 5 variations of given instruction by making small changes. Instruction: {{instruction}}. Output a single Python list for new instructions, and nothing else. New instructions:",
            operator=Operator.GENERATION,
            outputs=[Write.new("variations")],
        )

        # Define flow
        flow = [Edge(source="generate_variations", target="_end")]

        # Build workflow
        builder.flow(flow)
        builder.set_return_value("variations")
        workflow = builder.build()
        return workflow


class SecondPipelineStep(StepTemplate):
    def create_workflow(self, instruction: str) -> Workflow:
        builder = WorkflowBuilder(instruction=instruction)

        builder.generative_step(
            id="execute_instruction",
            prompt="{{instruction}}",
            operator=Operator.GENERATION,
            outputs=[Write.new("output")],
        )

        flow = [Edge(source="execute_instruction", target="_end")]
        builder.flow(flow)
        builder.set_return_value("output")
        workflow = builder.build()
        return workflow


class BasicPipeline:
    def __init__(self, dria: Dria):
        self.pipeline = PipelineBuilder(dria)

    def build(self, instruction: str) -> Pipeline:
        self.pipeline << FirstPipelineStep().scatter() << SecondPipelineStep()
        self.pipeline.input(instruction=instruction)
        return self.pipeline.build()


# -- the seed's custom callback (flatten a list of lists) ----------------------------------


class SubtopicStep(StepTemplate):
    def create_workflow(self, topic: str) -> Workflow:
        builder = WorkflowBuilder(topic=topic)
        builder.generative_step(
            id="subtopics",
            prompt="List 3 subtopics of {{topic}} as a JSON list.",
            operator=Operator.GENERATION,
            outputs=[Write.new("subtopic_list")],
        )
        builder.flow([Edge(source="subtopics", target="_end")])
        builder.set_return_value("subtopic_list")
        return builder.build()

    def callback(self, step: "Step") -> Union[List[TaskInput], TaskInput]:
        # flatten list of lists
        outputs = [parse_json(o.result) for o in step.output]
        flattened = [item for sublist in outputs for item in sublist]
        return TaskInput(**{"subtopics": flattened})


class QuestionStep(StepTemplate):
    def create_workflow(self, subtopics: List[str]) -> Workflow:
        builder = WorkflowBuilder(subtopics=subtopics)
        builder.generative_step(
            id="question",
            prompt="Write one question covering all of these subtopics: {{ subtopics | join('; ') }}",
            operator=Operator.GENERATION,
            outputs=[Write.new("question")],
        )
        builder.set_return_value("question")
        return builder.build()


# -- the tests ---------------------------------------------------------------------------


def test_the_seed_basic_pipeline_runs_unchanged(owner, worker, fake_llm):
    pipeline = BasicPipeline(Dria()).build("Write a haiku")
    records = pipeline.execute(return_output=True, base_url=fake_llm.url, model="fake-model")
    assert pipeline.run.status == Run.COMPLETED
    assert len(records) == 5  # 5 variations scattered -> 5 executed instructions
    assert all(set(r) == {"instruction", "output"} for r in records)
    assert len({r["instruction"] for r in records}) == 5
    assert all(r["output"] for r in records)
    # each variation was the prompt of one second-step task, as the seed's scatter does
    second = Task.objects.filter(run=pipeline.run, step=1)
    assert sorted(t.context["instruction"] for t in second) == sorted(
        r["instruction"] for r in records
    )
    first = Task.objects.get(run=pipeline.run, step=0)
    assert "Instruction: Write a haiku." in first.trace[0]["messages"][-1]["content"]
    assert fake_llm.stats()["total"] == 6


def test_list_inputs_and_the_seeds_custom_callback(owner, worker, fake_llm):
    builder = PipelineBuilder(Dria())
    builder << SubtopicStep() << QuestionStep()
    builder.input([{"topic": t} for t in ["Rivers", "Deserts", "Glaciers"]])
    pipeline = builder.build()
    assert pipeline.spec.steps[0].callback.name == f"{__name__}:SubtopicStep"
    records = pipeline.execute(base_url=fake_llm.url, model="fake-model")
    final = Task.objects.get(run=pipeline.run, step=1)
    assert len(final.context["subtopics"]) == 9  # three lists of 3, flattened in input order
    assert len(records) == 1 and records[0]["question"]
    first_run = str(pipeline.run.code)
    code = pipeline.execute(return_output=False, base_url=fake_llm.url)  # the seed returns an id
    assert code == str(pipeline.run.code) != first_run


def test_execute_says_so_when_no_worker_drives_the_run(owner, redis_client, fake_llm):
    pipeline = BasicPipeline(Dria()).build("Write a haiku")
    with pytest.raises(DriaRunError, match="no worker picked up run .* within 1s"):
        pipeline.execute(base_url=fake_llm.url, model="fake-model", start_timeout=1)
    pipeline.run.refresh_from_db()
    assert pipeline.run.status == Run.CANCELLED


def test_execute_needs_a_provider(owner, settings):
    settings.DEFAULT_LLM_BASE_URL = ""
    pipeline = BasicPipeline(Dria()).build("Write a haiku")
    with pytest.raises(ValueError, match="no LLM provider: pass execute\\(base_url="):
        pipeline.execute()
