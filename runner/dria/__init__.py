"""The Dria SDK's names with the seed's signatures, so Dria code runs with its imports changed.

    from dria_workflows import *                                  -> from runner.dria import *
    from dria.pipelines import StepTemplate, Pipeline, PipelineBuilder
                                                                  -> from runner.dria import ...
    from dria.client import Dria                                  -> from runner.dria import Dria

Workflows (`workflows.py`, the seed's inputs, outputs and conditions in `io.py`) become
our `WorkflowSpec`, pipelines (`pipelines.py`) our `PipelineSpec` (`Pipeline.spec`,
`Pipeline.to_json()`), so a pipeline written this way shows up in the dashboard; `Pipeline.execute()` (`run.py`) runs it on the
workers and returns its records.
"""

from .io import (
    ConditionBuilder,
    Expression,
    GetAll,
    InputPlaceholder,
    InputUsedAsValue,
    Operator,
    Peek,
    Pop,
    Push,
    Read,
    Size,
    String,
    Write,
)
from .pipelines import (
    Dria,
    Pipeline,
    PipelineBuilder,
    PipelineConfig,
    StepTemplate,
    StepView,
    TaskInput,
    TaskResult,
    parse_json,
)
from .workflows import Edge, Workflow, WorkflowBuilder

__all__ = [
    "ConditionBuilder",
    "Dria",
    "Edge",
    "Expression",
    "GetAll",
    "InputPlaceholder",
    "InputUsedAsValue",
    "Operator",
    "Peek",
    "Pipeline",
    "PipelineBuilder",
    "PipelineConfig",
    "Pop",
    "Push",
    "Read",
    "Size",
    "StepTemplate",
    "StepView",
    "String",
    "TaskInput",
    "TaskResult",
    "Workflow",
    "WorkflowBuilder",
    "Write",
    "parse_json",
]
