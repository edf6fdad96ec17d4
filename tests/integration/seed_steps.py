"""The seed's examples, written with the builder. Workers import the custom step from here."""

from runner.spec.builder import PipelineBuilder, Step, TaskInput, parse_json


class FirstPipelineStep(Step):
    prompt = (
        "Rewrite 5 variations of given instruction by making small changes. Instruction: {{instruction}}. "
        "Output a single Python list for new instructions, and nothing else. New instructions:"
    )
    output = "json_list"
    output_key = "instructions"


class SecondPipelineStep(Step):
    prompt = "{{instruction}}"
    output_key = "result"


class SubtopicStep(Step):
    """Lists subtopics; its custom callback flattens every list into one input (the seed's example)."""

    prompt = "List 3 subtopics of {{topic}} as a JSON list."
    output = "json_list"
    output_key = "subtopic_list"
    produces = ["subtopics"]

    def callback(self, step):
        # flatten list of lists
        outputs = [parse_json(o.result) for o in step.output]
        flattened = [item for sublist in outputs for item in sublist]
        return TaskInput(**{"subtopics": flattened})


class SummaryStep(Step):
    prompt = "Write one question covering all of these subtopics: {{ subtopics | join('; ') }}"
    output_key = "question"


def basic_pipeline(instruction):
    pipeline = PipelineBuilder("Basic pipeline")
    pipeline << FirstPipelineStep().scatter("instruction") << SecondPipelineStep()
    pipeline.input(instruction=instruction)
    return pipeline.build()


def basic_pipeline_many(instructions):
    pipeline = PipelineBuilder("Basic pipeline")
    pipeline << FirstPipelineStep().scatter("instruction") << SecondPipelineStep()
    pipeline.input([{"instruction": instruction} for instruction in instructions])
    return pipeline.build()


def flatten_pipeline(topics):
    pipeline = PipelineBuilder("Flatten")
    pipeline << SubtopicStep() << SummaryStep()
    pipeline.input([{"topic": t} for t in topics])
    return pipeline.build()
