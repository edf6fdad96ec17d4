"""Unit tests for runner.templating: sandboxed Jinja2 prompts."""

import pytest

from runner.spec import templating
from runner.spec.templating import TemplateError, check, render, variables

# -- rendering ---------------------------------------------------------------------


def test_tight_and_spaced_braces_both_render():
    assert render("{{topic}}", {"topic": "bees"}) == "bees"
    assert render("{{ topic }}", {"topic": "bees"}) == "bees"
    assert render("A {{topic}} and {{  topic  }}.", {"topic": "bee"}) == "A bee and bee."


def test_plain_text_without_variables():
    assert render("Just say hello.", {}) == "Just say hello."


def test_trailing_newline_is_kept():
    assert render("Hello {{ name }}\n", {"name": "Ada"}) == "Hello Ada\n"


def test_no_html_escaping():
    # Prompts are plain text for a model, never HTML.
    assert render("{{ x }}", {"x": '<b>Tom & Jerry\'s "show"</b>'}) == (
        '<b>Tom & Jerry\'s "show"</b>'
    )


def test_unicode_values():
    assert render("{{ a }} – {{ b }}", {"a": "Grüße", "b": "世界 🌍"}) == "Grüße – 世界 🌍"


def test_filters():
    ctx = {"name": "ada lovelace", "items": ["b", "a", "c"], "n": 3.14159}
    assert render("{{ name | title }}", ctx) == "Ada Lovelace"
    assert render("{{ name|upper }}", ctx) == "ADA LOVELACE"
    assert render("{{ items | sort | join(', ') }}", ctx) == "a, b, c"
    assert render("{{ items | length }}", ctx) == "3"
    assert render("{{ n | round(2) }}", ctx) == "3.14"
    assert render("{{ missing | default('none') }}", {}) == "none"


def test_for_loop_with_loop_variable():
    source = "{% for q in questions %}{{ loop.index }}. {{ q }}\n{% endfor %}"
    assert render(source, {"questions": ["Why?", "How?"]}) == "1. Why?\n2. How?\n"


def test_if_and_set():
    source = "{% set who = name or 'you' %}{% if formal %}Dear {{ who }}{% else %}Hi {{ who }}{% endif %}"
    assert render(source, {"name": "Ada", "formal": True}) == "Dear Ada"
    assert render(source, {"name": "", "formal": False}) == "Hi you"


def test_dict_item_and_attribute_access_on_data():
    ctx = {"q": {"text": "Why?", "tags": ["a", "b"]}}
    assert render("{{ q.text }} {{ q['tags'][1] }}", ctx) == "Why? b"


def test_json_values_render_like_python():
    assert render("{{ xs }}", {"xs": [1, "a"]}) == "[1, 'a']"


# -- variables() -------------------------------------------------------------------


def test_variables_of_simple_template():
    assert variables("{{topic}} for {{ audience }}") == {"topic", "audience"}


def test_variables_exclude_loop_and_set_variables():
    source = (
        "{% for q in questions %}{{ loop.index }} {{ q }} {{ q.text }}{% endfor %}"
        "{% set tone = 'calm' %}{{ tone }} {{ style }}"
    )
    assert variables(source) == {"questions", "style"}


def test_variables_include_names_used_only_in_filters_tags_and_conditions():
    source = "{% if formal %}{{ name | default(fallback) }}{% endif %}{{ items | join(sep) }}"
    assert variables(source) == {"formal", "name", "fallback", "items", "sep"}


def test_variables_exclude_jinja_globals():
    assert variables("{% for i in range(n) %}{{ i }}{% endfor %}") == {"n"}


def test_variables_of_plain_text():
    assert variables("no variables here") == set()


def test_variables_of_invalid_template_raises():
    with pytest.raises(TemplateError):
        variables("{{ topic ")


def test_check_accepts_valid_and_refuses_invalid():
    check("{{ a }} {% for x in y %}{{ x }}{% endfor %}")
    with pytest.raises(TemplateError):
        check("{% for x in y %}{{ x }}")


# -- errors ------------------------------------------------------------------------


def test_undefined_variable_raises_template_error():
    with pytest.raises(TemplateError) as info:
        render("Tell me about {{ topic }}", {})
    assert "topic" in str(info.value)
    assert str(info.value).startswith("missing value: ")


def test_undefined_attribute_raises_template_error():
    with pytest.raises(TemplateError):
        render("{{ q.nope }}", {"q": {"text": "x"}})


def test_undefined_inside_loop_raises_template_error():
    with pytest.raises(TemplateError):
        render("{% for q in questions %}{{ q }}{% endfor %}", {})


def test_syntax_error_names_the_line():
    with pytest.raises(TemplateError) as info:
        render("line one\nline two\n{{ broken ) }}\nline four", {"broken": 1})
    assert str(info.value).startswith("line 3: ")


def test_syntax_error_on_first_line():
    with pytest.raises(TemplateError) as info:
        check("{% if %}")
    assert str(info.value).startswith("line 1: ")


def test_unknown_tag_is_a_syntax_error_with_line():
    with pytest.raises(TemplateError) as info:
        check("ok\n{% frobnicate %}")
    assert str(info.value).startswith("line 2: ")


def test_template_error_is_a_value_error():
    assert issubclass(TemplateError, ValueError)


def test_filter_given_the_wrong_type_is_a_template_error():
    with pytest.raises(TemplateError):
        render("{{ n | round(2) }}", {"n": "not a number"})


def test_unknown_filter_is_a_template_error():
    with pytest.raises(TemplateError):
        render("{{ x | no_such_filter }}", {"x": 1})


# -- the sandbox -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ x.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ x.__dict__ }}",
        "{{ x['__class__'] }}",
        "{{ x | attr('__class__') }}",
        "{{ self.__init__.__globals__ }}",
        "{{ range.__self__ }}",
    ],
)
def test_access_to_internals_is_refused(source):
    with pytest.raises(TemplateError):
        render(source, {"x": "text"})


def test_mutating_values_is_refused():
    data = {"xs": [1, 2]}
    with pytest.raises(TemplateError) as info:
        render("{{ xs.append(3) }}", data)
    assert str(info.value).startswith("not allowed in a prompt: ")
    assert data["xs"] == [1, 2]


def test_huge_range_is_refused():
    with pytest.raises(TemplateError):
        render("{% for i in range(10000000) %}{% endfor %}", {})


def test_format_string_tricks_are_refused():
    with pytest.raises(TemplateError):
        render("{{ '{0.__class__}'.format(x) }}", {"x": "a"})


def test_parse_cache_does_not_leak_values_between_renders():
    source = "{{ who }}"
    assert render(source, {"who": "a"}) == "a"
    assert render(source, {"who": "b"}) == "b"
    with pytest.raises(TemplateError):
        render(source, {})


def test_environment_is_sandboxed_and_strict():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    assert isinstance(templating._env, SandboxedEnvironment)
    assert templating._env.undefined is StrictUndefined
    assert templating._env.autoescape is False


# -- bounded work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loops went over 1,000,000 steps (the limit)",
        ),
        (
            "{% for a in xs %}{% for b in xs %}{% for c in xs %}{% endfor %}{% endfor %}{% endfor %}",
            "loops went over 1,000,000 steps (the limit)",
        ),
        ("{{ 'a' * 20000000 }}", "text * 20,000,000 would be over 1,000,000 characters"),
        ("{{ xs * 5000 }}", "list * 5,000 would be over 1,000,000 characters"),
        ("{{ 9 ** 99999999 }}", "too big a number"),
        ("{{ 'x'|center(100000000) }}", "center(100,000,000) would be over 1,000,000"),
        ("{{ range(2000000)|list }}", "range(2,000,000) is over 1,000,000 steps"),
        (
            "{% for i in range(1000) %}{{ 'abcdefghij' * 200 }}{% endfor %}",
            "the filled-in prompt would be over 1,000,000 characters",
        ),
    ],
)
def test_work_a_prompt_may_do_is_bounded_and_the_error_names_the_limit(source, says):
    with pytest.raises(templating.TemplateLimitError) as err:
        render(source, {"xs": list(range(1000))})
    assert says in str(err.value)


def test_a_slow_template_stops_at_the_time_limit(monkeypatch):
    monkeypatch.setattr(templating.LIMITS, "seconds", 0.05)
    monkeypatch.setattr(templating.LIMITS, "steps", 10**9)
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(templating.TemplateLimitError) as err:
        render(source, {})
    assert "took over 0.05 s (the limit)" in str(err.value)


def test_ordinary_loops_and_ranges_still_work():
    source = "{% for t in topics %}{{ loop.index }}. {{ t }}\n{% endfor %}{{ range(3)|list }} {{ range(4)|length }}"
    out = render(source, {"topics": ["tea", "rain"]})
    assert out == "1. tea\n2. rain\n[0, 1, 2] 4"
    assert render("{{ xs|join(', ') }} {{ xs }}", {"xs": ["a", "b"]}) == "a, b ['a', 'b']"
