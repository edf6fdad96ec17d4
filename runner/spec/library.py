"""Built-in templates: the seed's pipelines, written with the builder."""

from dataclasses import dataclass

from .builder import PipelineBuilder, Step
from .schema import PipelineSpec


@dataclass
class Template:
    slug: str
    title: str
    purpose: str
    spec: PipelineSpec

    @property
    def shape(self):
        return " -> ".join(f"{s.name} ({s.fan})" for s in self.spec.steps)


def instruction_variations():
    p = PipelineBuilder(
        "Instruction variations",
        "An instruction -> 5 variations as a JSON list, scattered -> each variation executed.",
    )
    (
        p
        << Step(
            "Rewrite 5 variations of the given instruction by making small changes.\n"
            "Instruction: {{instruction}}\n"
            "Output a single JSON list of the new instructions, and nothing else.",
            name="variations",
            output="json_list",
            output_key="variations",
        ).scatter("variation")
        << Step("{{variation}}", name="execute", output_key="output")
    )
    p.input(
        [
            {"instruction": "Write a haiku"},
            {"instruction": "Write a sonnet"},
            {"instruction": "Write a limerick"},
        ]
    )
    return p.build()


def qa_from_topics():
    p = PipelineBuilder(
        "Questions and answers from topics",
        "A topic -> subtopics as a JSON list, scattered -> one question per subtopic -> one answer per question.",
    )
    (
        p
        << Step(
            "List 5 distinct subtopics of the topic below that a learner should know about.\n"
            "Topic: {{topic}}\n"
            "Reply with a JSON list of short strings and nothing else.",
            name="subtopics",
            output="json_list",
            output_key="subtopics",
        ).scatter("subtopic")
        << Step(
            "Write one clear question that a curious learner might ask about {{subtopic}} "
            "(part of the topic {{topic}}). Reply with the question only.",
            name="question",
            output_key="question",
        )
        << Step(
            "Answer the question below accurately and concisely.\nQuestion: {{question}}",
            name="answer",
            output_key="answer",
        )
    )
    p.input(topic="Solar energy")
    return p.build()


def topics_flatten_qa():
    p = PipelineBuilder(
        "Pooled subtopics -> questions -> answers",
        "Topics -> subtopics lists, flattened into one list (N -> 1) -> questions as a JSON list, "
        "scattered -> one answer per question. The seed's aggregate-and-flatten example.",
    )
    (
        p
        << Step(
            "List 3 distinct subtopics of the topic below.\nTopic: {{topic}}\n"
            "Reply with a JSON list of short strings and nothing else.",
            name="subtopics",
            output="json_list",
            output_key="subtopics",
        ).transform("flatten", into="subtopics")
        << Step(
            "Here is a list of subtopics: {{ subtopics | join(', ') }}.\n"
            "Write one question for each subtopic. Reply with a JSON list of questions and nothing else.",
            name="questions",
            output="json_list",
            output_key="questions",
        ).scatter("question")
        << Step(
            "Answer the question below accurately and concisely.\nQuestion: {{question}}",
            name="answer",
            output_key="answer",
        )
    )
    p.input([{"topic": "Solar energy"}, {"topic": "Ocean tides"}, {"topic": "Volcanoes"}])
    return p.build()


_BUILDERS = {
    "instruction-variations": instruction_variations,
    "qa-from-topics": qa_from_topics,
    "topics-flatten-qa": topics_flatten_qa,
}


def templates():
    out = []
    for slug, fn in _BUILDERS.items():
        spec = fn()
        out.append(Template(slug, spec.name, spec.description, spec))
    return out


def get(slug):
    fn = _BUILDERS.get(slug)
    return Template(slug, *(lambda s: (s.name, s.description, s))(fn())) if fn else None


def slugs():
    return list(_BUILDERS)
