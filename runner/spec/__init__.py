"""The pure layer: what a pipeline is, before anything runs.

`schema` (the spec, one validated JSON document), `checks` (what is wrong with one,
as `Problem`s that name their step, field and code), `templating` (sandboxed prompts),
`parsing` (a reply into a step's output), `callbacks` (outputs into the next inputs),
`builder` and `library` (pipelines written in Python, built-in templates),
`estimate` (calls, tokens and cost before a run) and `money`. No database, no
network: everything here is a function of its arguments.
"""

from .checks import KEY_RE, SPEC_VERSION, Problem, SpecError
from .schema import (
    FAN,
    WAITING_CALLBACKS,
    CallbackSpec,
    CallbackType,
    ModelParams,
    ModelRef,
    OutputFormat,
    PipelineSpec,
    StepSpec,
)

__all__ = [
    "FAN",
    "KEY_RE",
    "SPEC_VERSION",
    "WAITING_CALLBACKS",
    "CallbackSpec",
    "CallbackType",
    "ModelParams",
    "ModelRef",
    "OutputFormat",
    "PipelineSpec",
    "Problem",
    "SpecError",
    "StepSpec",
]
