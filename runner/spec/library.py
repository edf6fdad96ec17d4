"""Built-in templates: the seed's pipelines, written with the builder, and workflow steps.

A workflow step (several prompts sharing a memory, `runner.spec.workflow`) is written
here as the spec's own data: the builder makes one-prompt steps. Every prompt is
worded so that a chat model (the built-in small one included) and the test suite's
fake server both answer it as the step expects: a JSON list only where the step's
output is a list, the number of items asked in digits, one question where one is
wanted.
"""

from dataclasses import dataclass

from .builder import Judge, PipelineBuilder, Step
from .schema import PipelineSpec, StepSpec


@dataclass
class Template:
    slug: str
    title: str
    purpose: str
    spec: PipelineSpec

    @property
    def shape(self):
        return " → ".join(_step_shape(s) for s in self.spec.steps)


def _step_shape(step):
    """ "answer (1 → 1)"; a workflow: "dialogue (2 prompts, 6 calls in a loop; 1 → 1)"."""
    flow = step.workflow
    if flow is None:
        return f"{step.name} ({step.fan})"
    n = len(flow.tasks)
    text = f"{n} prompt{'s' if n != 1 else ''}"
    if flow.has_loop():
        calls, upto = flow.calls_bound()
        text += f", {'up to ' if upto or flow.loop_rounds() is None else ''}{calls} calls in a loop"
    return f"{step.name} ({text}; {step.fan})"


def _task(id, prompt, *outputs, inputs=(), output_format="text"):
    """A workflow's prompt: outputs are ("push", key) or ("write", key)."""
    return {
        "id": id,
        "prompt": prompt,
        "inputs": list(inputs),
        "outputs": [{"kind": kind, "key": key} for kind, key in outputs],
        "output_format": output_format,
    }


def _until_size(source, key, n, back_to):
    """The edge that loops back to `back_to` until the list `key` holds n items."""
    return {
        "source": source,
        "target": "_end",
        "condition": {
            "input": {"kind": "size", "key": key},
            "expression": "GreaterThanOrEqual",
            "expected": str(n),
            "target_if_not": back_to,
        },
    }


def _workflow_step(name, tasks, returns, edges=(), callback=None, **limits):
    return StepSpec.model_validate(
        {
            "name": name,
            "workflow": {
                "tasks": tasks,
                "edges": list(edges),
                "return_value": list(returns),
                **limits,
            },
            "callback": callback or {},
        }
    )


def _spec(name, description, steps, inputs):
    """A pipeline of builder steps and workflow steps, with the same checks as any spec."""
    built = [s.to_spec(i) if isinstance(s, Step) else s for i, s in enumerate(steps)]
    spec = PipelineSpec(name=name, description=description, steps=built, inputs=inputs)
    return PipelineSpec.load(spec.to_dict())


def instruction_variations():
    p = PipelineBuilder(
        "Instruction variations",
        "An instruction → 5 variations as a JSON list, scattered → each variation executed.",
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
        "A topic → subtopics as a JSON list, scattered → one question per subtopic → one answer per question.",
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
        "Pooled subtopics → questions → answers",
        "Topics → subtopics lists, flattened into one list (N → 1) → questions as a JSON list, "
        "scattered → one answer per question. The seed's aggregate-and-flatten example.",
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


# -- templates whose steps are workflows ----------------------------------------------------

DIALOGUE_EXCHANGES = 3
QUESTIONS = 3
EVOL_ROUNDS = 3

_CONVERSATION = (
    "{% for turn in dialogue %}{{ 'User' if loop.index0 % 2 == 0 else 'Assistant' }}: "
    "{{ turn }}\n{% endfor %}"
)


def multi_turn_dialogue():
    """MagPie-style: the model writes both sides of a conversation, one turn at a time."""
    turns = 2 * DIALOGUE_EXCHANGES
    user = _task(
        "user",
        "Topic: {{topic}}\n"
        "{% if dialogue %}The conversation so far:\n" + _CONVERSATION + "{% endif %}"
        "Write the next message a curious user sends to an AI assistant about {{topic}}. "
        "Reply with one question only, as the user would type it.",
        ("push", "dialogue"),
        inputs=[{"kind": "get_all", "key": "dialogue", "required": False}],
    )
    assistant = _task(
        "assistant",
        "Topic: {{topic}}\nThe conversation so far:\n" + _CONVERSATION + "Write the "
        "assistant's answer to the user's last message: helpful, accurate, one short paragraph.",
        ("push", "dialogue"),
        inputs=[{"kind": "get_all", "key": "dialogue"}],
    )
    return _spec(
        "Multi-turn dialogue",
        f"A topic → a conversation of {DIALOGUE_EXCHANGES} exchanges: a user turn and an "
        f"assistant turn pushed to “dialogue”, looped until it holds {turns} turns "
        "(MagPie-style: the model writes both sides).",
        [
            _workflow_step(
                "dialogue",
                [user, assistant],
                ["dialogue"],
                [_until_size("assistant", "dialogue", turns, "user")],
            )
        ],
        [{"topic": "Cooking pasta"}, {"topic": "Learning to swim"}],
    )


def questions_until_n():
    """Questions one at a time, each new, until there are enough; then one answer each."""
    ask = _task(
        "ask",
        "Topic: {{topic}}\n"
        "Write one new question that a curious learner might ask about {{topic}}."
        "{% if questions %} It must not repeat or rephrase any of these questions:\n"
        "{% for q in questions %}- {{ q }}\n{% endfor %}{% endif %}\n"
        "Reply with the question only.",
        ("push", "questions"),
        inputs=[{"kind": "get_all", "key": "questions", "required": False}],
    )
    return _spec(
        "Questions until n, then answers",
        f"A topic → a new question (not one already in memory) pushed to “questions” until it "
        f"holds {QUESTIONS}, scattered → one answer per question.",
        [
            _workflow_step(
                "questions",
                [ask],
                ["questions"],
                [_until_size("ask", "questions", QUESTIONS, "ask")],
                callback={"type": "scatter", "item_key": "question"},
            ),
            Step(
                "Answer the question below accurately and concisely.\nQuestion: {{question}}",
                name="answer",
                output_key="answer",
            ),
        ],
        [{"topic": "Volcanoes"}, {"topic": "Honey bees"}],
    )


def draft_critique_revise():
    draft = _task(
        "draft",
        "Write a short paragraph of about 100 words that explains {{topic}} to a general "
        "reader. Reply with the paragraph only.",
        ("write", "draft"),
    )
    critique = _task(
        "critique",
        "Here is a draft paragraph about {{topic}}:\n{{draft}}\n\n"
        "Critique it: name its two biggest weaknesses (accuracy, clarity or structure) and "
        "say how to fix each.",
        ("write", "critique"),
    )
    revise = _task(
        "revise",
        "Rewrite the draft below, fixing every point of the critique. "
        "Reply with the revised paragraph only.\nDraft:\n{{draft}}\n\nCritique:\n{{critique}}",
        ("write", "revision"),
    )
    return _spec(
        "Draft, critique, revise",
        "A topic → a draft paragraph → a critique of it → a revision that fixes the critique; "
        "the record keeps all three.",
        [_workflow_step("essay", [draft, critique, revise], ["draft", "critique", "revision"])],
        [{"topic": "How vaccines work"}, {"topic": "Why the sky is blue"}],
    )


_EVOLVE = (
    "Instruction: {{instruction}}\n\n"
    "Rewrite the instruction above into a harder version of it: add one constraint or "
    "requirement, or ask for deeper reasoning, so that it stays clear and can still be "
    "carried out. Reply with the new instruction only."
)


def evol_instruct():
    """Evol-Instruct: an instruction rewritten harder, round after round; the last one done."""
    first = _task("evolve", _EVOLVE, ("push", "versions"))
    again = _task(
        "evolve_again",
        _EVOLVE,
        ("push", "versions"),
        inputs=[{"kind": "peek", "key": "versions", "index": -1, "name": "instruction"}],
    )
    return _spec(
        "Evol-Instruct",
        f"An instruction → rewritten harder {EVOL_ROUNDS} times, each round reading the last "
        f"version (Peek -1) and pushing the new one to “versions” until it holds "
        f"{EVOL_ROUNDS} → the hardest version carried out.",
        [
            _workflow_step(
                "evolve",
                [first, again],
                ["versions"],
                [_until_size("evolve_again", "versions", EVOL_ROUNDS, "evolve_again")],
            ),
            Step(
                "Carry out this instruction:\n{{ versions | last }}",
                name="response",
                output_key="response",
            ),
        ],
        [{"instruction": "Write a haiku about autumn"}, {"instruction": "Explain recursion"}],
    )


def persona_backstory():
    persona = _task(
        "persona",
        "Invent a persona who could appear in a dataset about {{domain}}: their name, age, "
        "occupation and two personality traits. Reply with the persona only.",
        ("write", "persona"),
    )
    backstory = _task(
        "backstory",
        "Write a backstory of about 120 words for the persona below: where they grew up, a "
        "turning point in their life, and what they want now.\nPersona: {{persona}}",
        ("write", "backstory"),
    )
    return _spec(
        "Persona and backstory",
        "A domain → a persona → a backstory that reads it; the record keeps both.",
        [_workflow_step("persona", [persona, backstory], ["persona", "backstory"])],
        [{"domain": "a small-town bakery"}, {"domain": "a hospital night shift"}],
    )


def nvidia_preference():
    """The seed's Nvidia example: topic → subtopics → questions → two responses each."""
    first = _task(
        "response_a",
        "Answer the question below helpfully and accurately, in a short paragraph.\n"
        "Question: {{question}}",
        ("push", "responses"),
    )
    second = _task(
        "response_b",
        "Here is a question and a first answer to it.\nQuestion: {{question}}\n"
        "First answer: {{first_answer}}\n\n"
        "Write a second, different answer to the question: take another angle or another "
        "level of detail. Reply with the answer only.",
        ("push", "responses"),
        inputs=[{"kind": "peek", "key": "responses", "index": 0, "name": "first_answer"}],
    )
    return _spec(
        "Nvidia preference data",
        "The seed's Nvidia example: a topic → 3 subtopics, comma-separated text split by commas "
        "→ 2 questions per subtopic, one a line, split by lines → two different responses per "
        "question (a two-prompt workflow), scattered: the two records of a question are "
        "adjacent, ready for a preference (chosen / rejected) export.",
        [
            Step(
                "Write 3 subtopics of the topic below, separated by a comma, on one line, "
                "with no numbers, descriptions or other text.\n"
                "Topic: {{topic}}\nSubtopics:",
                name="subtopics",
                output_key="subtopics",
            ).transform("split", delimiter=",", item_key="subtopic"),
            Step(
                "Write 2 questions that someone could ask about the topic below, one question "
                "per line, separated by a newline, with no numbers or other text.\n"
                "Topic: {{subtopic}}\nQuestions:",
                name="questions",
                output_key="questions",
            ).transform("split_lines", item_key="question"),
            _workflow_step(
                "responses",
                [first, second],
                ["responses"],
                callback={"type": "scatter", "item_key": "response"},
            ),
        ],
        [{"topic": "Machine learning"}],
    )


def preference_pairs():
    """The seed's Nvidia example taken to its end: two responses a question, a judge picks."""
    p = PipelineBuilder(
        "Preference pairs",
        "A topic → 4 subtopics as a JSON list, scattered → one question per subtopic "
        "(near duplicates set aside) → two responses to each question (the second written "
        "differently; give it another model for two models) → a judge that scores both and "
        "picks the better one. The preference export then has one row per judged question: "
        "prompt, chosen, rejected and their scores.",
    )
    (
        p
        << Step(
            "List 4 distinct subtopics of the topic below that people often ask about.\n"
            "Topic: {{topic}}\n"
            "Reply with a JSON list of short strings and nothing else.",
            name="subtopics",
            output="json_list",
            output_key="subtopics",
        ).scatter("subtopic")
        << Step(
            "Write one question that someone might ask about {{subtopic}} (part of the "
            "topic {{topic}}). Reply with the question only.",
            name="question",
            output_key="question",
        ).drop_duplicates("question")
        << Step(
            "Answer the question below helpfully and accurately, in a short paragraph.\n"
            "Question: {{question}}",
            name="response_a",
            output_key="response_a",
        )
        << Step(
            "Answer the question below in a short paragraph. Take another angle or another "
            "level of detail than a textbook answer would.\nQuestion: {{question}}",
            name="response_b",
            output_key="response_b",
            temperature=1.0,
        )
        << Judge(
            ["question"],
            [
                {
                    "key": "helpfulness",
                    "description": "How well the response answers the question",
                    "levels": {
                        "1": "does not answer it",
                        "3": "answers part of it",
                        "5": "answers it fully and clearly",
                    },
                },
                {
                    "key": "accuracy",
                    "description": "How correct the response is",
                    "levels": {"1": "mostly wrong", "5": "entirely correct"},
                },
            ],
            pair=("response_a", "response_b"),
            name="judge",
        )
    )
    p.input([{"topic": "Home cooking"}, {"topic": "Personal finance"}])
    return p.build()


_BUILDERS = {
    "instruction-variations": instruction_variations,
    "qa-from-topics": qa_from_topics,
    "topics-flatten-qa": topics_flatten_qa,
    "multi-turn-dialogue": multi_turn_dialogue,
    "questions-until-n": questions_until_n,
    "draft-critique-revise": draft_critique_revise,
    "evol-instruct": evol_instruct,
    "persona-backstory": persona_backstory,
    "nvidia-preference": nvidia_preference,
    "preference-pairs": preference_pairs,
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
