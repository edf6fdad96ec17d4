"""The pure half of quality: diversity numbers by hand, filters, judges' verdicts, MinHash."""

import pytest

from runner.spec import PipelineSpec, SpecError
from runner.spec import quality as q
from runner.spec.parsing import parse_output


def test_distinct_n_matches_a_hand_computation():
    texts = ["The cat sat.", "the cat ran", "A dog"]
    # words: the cat sat | the cat ran | a dog -> 8 unigrams, 5 unique (the cat sat ran a dog = 6)
    assert q.distinct_n(texts, 1) == round(6 / 8, 4)
    # bigrams: the cat, cat sat | the cat, cat ran | a dog -> 5, unique 4
    assert q.distinct_n(texts, 2) == round(4 / 5, 4)
    assert q.distinct_n([], 1) == 0.0
    assert q.distinct_n(["one"], 2) == 0.0  # a one-word text has no bigram


def test_field_profile_counts_exact_and_near_duplicates_and_lengths():
    long = "which gases escape from a volcano before an eruption and how are they measured safely"
    texts = ["What is magma?", "what is   MAGMA?", long, long + " today", "Why is lava hot?"]
    p = q.field_profile(texts)
    assert p["records"] == 5
    assert p["duplicates"] == 1  # the second spelling of the magma question
    assert p["near_duplicates"] == 1  # the long question with one more word
    assert p["length_min"] == len("What is magma?")
    assert p["length_max"] == len(long + " today")
    assert q.field_profile([]) == {"records": 0}


def test_signatures_are_those_of_datasketchs_minhash():
    """Made without importing datasketch (and scipy), the same numbers it would make."""
    from datasketch import MinHash

    texts = ["What is the capital of France, and why there?", "", "one", "a b c d e f g"]
    expected = []
    for text in texts:
        m = MinHash(num_perm=q.NUM_PERM, seed=q.SEED)
        m.update_batch(list(q.shingles(text)))
        expected.append(m.hashvalues.astype("<u4").tobytes())
    assert q.signatures(texts) == expected


def test_near_duplicates_are_those_a_pairwise_comparison_finds():
    """Texts alike enough to share LSH bands by the hundred (one template, a few words
    changed): the count is the one comparing each text with every kept earlier text
    sharing a band, one pair at a time, would give."""
    import random

    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(40)]
    base = "list five distinct subtopics of the item about".split()
    texts = []
    for i in range(600):
        words = base + [rng.choice(vocab) for _ in range(rng.choice((1, 2, 3, 6)))]
        texts.append(" ".join(words) + (f" {i}" if i % 3 else ""))
    sigs = q.signatures(texts)
    expected, kept, seen = 0, [], set()
    for text, sig in zip(texts, sigs, strict=True):
        if q.exact_hash(text) in seen:
            continue
        seen.add(q.exact_hash(text))
        mine = set(q.bands(sig))
        if any(mine & set(q.bands(o)) and q.similarity(sig, o) >= 0.85 for o in kept):
            expected += 1
        else:
            kept.append(sig)
    assert 20 < expected < 400  # the texts do test both outcomes
    assert q.near_duplicate_count(texts) == expected


def test_near_texts_have_similar_signatures_and_different_texts_do_not():
    a = "which gases escape from a volcano before an eruption and how are they measured safely"
    b = a + " today"
    c = "the history of bread baking in small towns of northern france during winter"
    sa, sb, sc = q.signatures([a, b, c])
    assert len(sa) == q.NUM_PERM * 4
    assert q.similarity(sa, sb) >= 0.85
    assert q.similarity(sa, sc) < 0.3
    assert set(q.bands(sa)) & set(q.bands(sb))  # candidates: they share a band
    assert q.normalized("  What IS\tmagma? ") == "what is magma?"
    assert q.exact_hash("What is magma?") == q.exact_hash("what  is MAGMA?")


@pytest.mark.parametrize(
    ("op", "value", "context", "kept"),
    [
        (">=", "4", {"score": 4}, True),
        (">=", "4", {"score": 3}, False),
        (">=", "4", {"score": "5"}, True),
        (">", "4", {"score": 4}, False),
        ("<", "2", {"score": 1}, True),
        ("==", "pass", {"score": "Pass"}, True),
        ("!=", "pass", {"score": "fail"}, True),
        ("==", "4", {"score": 4.0}, True),
        ("contains", "lava", {"score": "Hot LAVA flows"}, True),
        ("not_contains", "lava", {"score": "Hot LAVA flows"}, False),
        ("min_length", "5", {"score": "abcd"}, False),
        ("max_length", "5", {"score": "abcd"}, True),
        (">=", "4", {}, False),
        (">=", "4", {"score": "high"}, False),
    ],
)
def test_filters_keep_what_meets_the_condition(op, value, context, kept):
    f = q.FilterSpec(field="score", op=op, value=value)
    reason = q.filter_reason(f, context)
    assert (reason == "") is kept
    if not kept:
        assert "keep only score" in reason


def test_a_filter_that_compares_with_a_word_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="needs a number"):
        q.FilterSpec(field="score", op=">=", value="high")


def test_a_verdict_becomes_fields_and_a_pairwise_verdict_names_chosen_and_rejected():
    judge = q.JudgeSpec(
        fields=["question"],
        criteria=[q.Criterion(key="score"), q.Criterion(key="safe", scale="pass_fail")],
    )
    got = q.verdict(judge, {"score": 4.6, "safe": "Yes", "rationale": "good"}, {})
    assert got == {"score": 5, "safe": "pass", "rationale": "good"}
    with pytest.raises(q.VerdictError):
        q.verdict(judge, {"score": "n/a", "safe": "pass"}, {})
    pair = q.JudgeSpec(
        fields=["question"], criteria=[q.Criterion(key="score")], pair=["first", "second"]
    )
    ctx = {"question": "Q?", "first": "one", "second": "two"}
    got = q.verdict(
        pair, {"a": {"score": 2}, "b": {"score": 5}, "better": "b", "rationale": "r"}, ctx
    )
    assert got == {
        "score_a": 2,
        "score_b": 5,
        "preferred": "B",
        "chosen": "two",
        "rejected": "one",
        "rationale": "r",
    }
    assert pair.result_keys() == list(got)


def test_the_judge_reply_schema_takes_what_a_model_means():
    judge = q.JudgeSpec(
        fields=["answer"],
        criteria=[q.Criterion(key="score"), q.Criterion(key="safe", scale="pass_fail")],
    )
    schema = q.judge_schema(judge)
    reply = 'Here you go:\n```json\n{"score": "4/5", "safe": "PASS", "rationale": "fine"}\n```'
    assert parse_output(reply, "json_object", schema) == {
        "score": 4,
        "safe": "pass",
        "rationale": "fine",
    }
    with pytest.raises(ValueError, match="schema"):
        parse_output('{"score": 9, "safe": "pass", "rationale": ""}', "json_object", schema)


def _spec(*steps):
    return {"steps": list(steps)}


ASK = {"name": "ask", "prompt": "Ask about {{topic}}", "output_key": "question"}


def test_a_judge_step_is_a_prompt_made_from_its_rubric_and_its_fields_join_the_record():
    spec = PipelineSpec.load(
        _spec(
            ASK,
            {
                "name": "judge",
                "judge": {
                    "fields": ["question"],
                    "criteria": [
                        {"key": "clarity", "description": "Is it clear", "levels": {"1": "muddled"}}
                    ],
                },
                "keep": [{"field": "clarity", "op": ">=", "value": "3"}],
            },
        )
    )
    judge = spec.steps[1]
    assert "{{ question }}" in judge.prompt and "muddled" in judge.prompt
    assert judge.output_format == "json_object" and judge.output_key == "judge"
    assert spec.record_fields() == ["topic", "question", "clarity", "rationale"]
    again = PipelineSpec.load(spec.to_json())  # saved and read back: the same prompt
    assert again.steps[1].prompt == judge.prompt


def test_fields_a_step_cannot_have_are_named_in_the_problems():
    with pytest.raises(SpecError) as err:
        PipelineSpec.load(
            _spec(
                {**ASK, "dedup": {"field": "answer"}},
                {
                    "name": "judge",
                    "judge": {"fields": ["nope"], "criteria": [{"key": "score"}]},
                    "callback": {"type": "broadcast", "n": 2},
                },
            )
        )
    codes = {p.code for p in err.value.problems}
    assert codes == {"unknown_dedup_field", "unknown_judge_field", "judge_needs_default"}
    text = str(err.value)
    assert "drops duplicates of 'answer'" in text and "reads 'nope'" in text


def test_a_bad_rubric_is_refused_in_plain_words():
    with pytest.raises(SpecError, match="not on its scale"):
        PipelineSpec.load(
            _spec(
                ASK,
                {
                    "name": "judge",
                    "judge": {
                        "fields": ["question"],
                        "criteria": [{"key": "s", "levels": {"9": "x"}}],
                    },
                },
            )
        )
    with pytest.raises(SpecError) as err:
        PipelineSpec.load(_spec({**ASK, "keep": [{"field": "question", "op": ">=", "value": "x"}]}))
    assert "Value error" not in str(err.value)
    assert "needs a number" in str(err.value)


def test_a_rubrics_own_words_are_never_filled_in_as_a_template():
    from runner.spec import templating

    judge = q.JudgeSpec(
        fields=["answer"],
        criteria=[
            q.Criterion(
                key="score",
                description="Does it quote {{ secret }} or {% for x in y %}loop{% endfor %}?",
                levels={"1": "{# a comment #} it does"},
            )
        ],
        instructions="Ignore {{answer}} written here.",
    )
    text = templating.render(q.judge_prompt(judge), {"answer": "Forty-two", "secret": "hidden"})
    assert "Does it quote {{ secret }} or {% for x in y %}loop{% endfor %}?" in text
    assert "1: {# a comment #} it does" in text
    assert "Ignore {{answer}} written here." in text
    assert "Forty-two" in text and "hidden" not in text  # the judged field itself is filled in
