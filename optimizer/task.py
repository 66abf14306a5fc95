"""The task definition (``task.yaml``): schema, loading and validation.

A task file names a dataset, how it is split, which fields are inputs and which
is the output, a seed instruction, a metric, an LM profile and optimizer
settings. Unknown keys are errors (``extra="forbid"``); every error names the
file, the dotted field and a fix. ``include:`` merges shared defaults first
(lm-evaluation-harness style); the including file wins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .configfile import REPO_CONFIGS, read_yaml, registered, validation_error_to_config_error
from .errors import ConfigError
from .plugins import METRICS, PROPOSERS, SELECTORS

SelectorName = registered(SELECTORS)
ProposerName = registered(PROPOSERS)
MetricName = registered(METRICS)
TextMetricName = registered(METRICS, lambda cls: cls.compares_text)  # scores gold against predicted text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldSpec(_Strict):
    """One input field: its name in prompts and programs, and where it comes from."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    column: str | None = None  # data column; defaults to name
    prefix: str | None = None  # label shown in prompts; defaults to the name, capitalised
    description: str | None = None
    pattern: str | None = None  # regex applied to the raw value: group "value" or group 1 kept

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def label(self) -> str:
        return self.prefix or self.name.replace("_", " ").capitalize()

    @property
    def noun(self) -> str:
        """The field in a sentence ("read the question"): its label, or its name where the label is an
        abbreviation (BBH's ``Q``/``A`` prefixes)."""
        label = self.label if len(self.label) > 2 else self.name.replace("_", " ")
        return label.lower()

    @field_validator("pattern")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return v


class OutputSpec(FieldSpec):
    """The output field; ``labels`` maps raw data values to the words the LM says.

    ``format`` says how an answer is read: ``line`` (the default) its first non-empty line, ``text`` all of
    it (several lines), ``json`` the first JSON value in it, checked against ``schema`` (a JSON Schema) when
    one is given; an answer that does not parse or fails the schema is a parse failure and scores 0."""

    labels: dict[str, str] | None = None
    rationale_column: str | None = None  # for chain_of_thought demos taken from data
    rationale_pattern: str | None = None
    format: Literal["line", "text", "json"] | None = None  # None: line
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @property
    def answer_format(self) -> str:
        return self.format or "line"

    @model_validator(mode="after")
    def _format_fits(self) -> "OutputSpec":
        if self.json_schema is not None:
            if self.answer_format != "json":
                raise ValueError("`schema` needs `format: json`; add it or remove the schema")
            import jsonschema

            try:
                jsonschema.validators.validator_for(self.json_schema).check_schema(self.json_schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"`schema` is not a valid JSON Schema: {exc.message}") from None
        if self.labels is not None and self.answer_format != "line":
            raise ValueError(f"`labels` needs a one-line answer; remove `format: {self.format}` or the labels")
        return self

    @field_validator("labels", mode="before")
    @classmethod
    def _label_keys_are_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(val) for k, val in v.items()}
        return v


class DatasetSpec(_Strict):
    """Where the examples come from: local files (via ``datasets``) or a hub name."""

    path: str | None = None  # a `datasets` hub name, e.g. "glue"; or omitted for local files
    name: str | None = None  # hub configuration name
    format: Literal["json", "jsonl", "csv", "tsv", "parquet", "lines"] | None = None
    files: dict[str, str | list[str]] | None = None  # split -> file(s), relative to the task file
    line_pattern: str | None = None  # format "lines": a regex whose named groups become columns
    json_field: str | None = None  # json: the key holding the list of records
    encoding: str = "utf-8"
    rename: dict[str, str] = Field(default_factory=dict)  # column renames applied where present

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetSpec":
        if not self.path and not self.files:
            raise ValueError("give either `files` (local data) or `path` (a datasets hub name)")
        if self.line_pattern is not None:
            try:
                rx = re.compile(self.line_pattern)
            except re.error as exc:
                raise ValueError(f"line_pattern is not a valid regular expression: {exc}") from None
            if not rx.groupindex:
                raise ValueError("line_pattern needs named groups, e.g. (?P<label>\\d) (?P<text>.*)")
        return self


class SplitSpec(_Strict):
    """One split drawn from a source split of the dataset."""

    source: str = Field(alias="from")
    fraction: float | None = Field(default=None, gt=0, le=1)
    limit: int | None = Field(default=None, gt=0)


class SplitsSpec(_Strict):
    """train = demo pool, validation = search objective, test = held out."""

    seed: int = 0
    # classification only: order each source so that every split holds each label in about its share of
    # the source (a 60-example validation split drawn at random can be 70% one label)
    stratify: bool = False
    train: SplitSpec
    validation: SplitSpec
    test: SplitSpec


class MetricSpec(_Strict):
    name: MetricName
    pattern: str | None = None  # regex metric: extraction pattern
    # regex metric: how the extracted text is scored (a metric of gold and predicted text)
    then: TextMetricName | None = None
    function: str | None = None  # custom: "module:function" or "path/to/file.py:function"
    labels: list[str] | None = None  # label_accuracy: the fixed label set (default: output.labels)
    fields: list[str] | None = Field(default=None, min_length=1)  # json_fields: the keys scored (default: all gold's)
    lm: str | None = None  # judge: the LM profile that judges (configs/lm/NAME.yaml or a path)
    rubric: str | None = None  # judge: what a good answer is, in words

    @model_validator(mode="after")
    def _needs(self) -> "MetricSpec":
        """What the metric's capabilities ask of the spec (``needs_pattern``, ``needs_function``)."""
        metric = METRICS.get(self.name)
        if metric.needs_pattern:
            if not self.pattern:
                raise ValueError(f"metric `{self.name}` needs `pattern`")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if metric.needs_function and not self.function:
            raise ValueError(f"metric `{self.name}` needs `function: module:function` or `file.py:function`")
        if metric.needs_lm and not (self.lm and self.rubric):
            raise ValueError(f"metric `{self.name}` needs `lm: PROFILE` (the judge) and `rubric:` (what a good "
                             "answer is)")
        if not metric.needs_lm and (self.lm or self.rubric):
            raise ValueError(f"`lm` and `rubric` belong to the judge metric, not `{self.name}`; remove them")
        return self


class OptimizerSpec(_Strict):
    """Search settings; CLI options override them. The defaults are the method that measured best in the
    comparison (experiments/results: `small-model-crossfit-both`): label readouts where the LM gives
    log-probabilities, kNN demos beside the fixed sets, two demo orders, the fixed set and the kNN prompt as
    the first trials, the label-balanced objective and 60 cross-fitted training examples."""

    trials: int = Field(default=24, gt=0)
    seed: int = 0
    max_demos: int = Field(default=8, ge=0, le=32)
    demo_sets: int = Field(default=12, ge=1)  # candidate demo sets over all selectors
    selectors: list[SelectorName] = Field(
        default_factory=lambda: ["random", "bootstrap", "diverse", "knn"])
    instructions: int = Field(default=6, ge=1)  # instruction pool size, seed included
    proposers: list[ProposerName] = Field(default_factory=lambda: ["offline", "lm"])
    proposer_lm: str | None = None  # LM profile for the proposer; defaults to the task LM
    bootstrap_examples: int = Field(default=48, ge=0)  # train examples run to find bootstrapped demos
    prune: bool = True  # paired Wilcoxon racing of trials on validation examples
    prune_p: float = Field(default=0.1, gt=0, lt=1)
    min_examples: int = Field(default=16, ge=1)  # examples a trial sees before it may be pruned
    # how losers are cut: wilcoxon (each trial races the best one, paired by example, and stops when
    # significantly worse) or halving (one shared example order; at min_examples * halving_rate**j
    # examples only the best 1/halving_rate of all trials on those same examples go on)
    racing: Literal["wilcoxon", "halving"] = "wilcoxon"
    halving_rate: int = Field(default=2, ge=2, le=8)
    # how answers are read: generated text, or (classification, completion prompts) the most likely label,
    # optionally calibrated on a content-free input (calibrated) or on the validation inputs (batch, joint
    # readouts only); several values make it a search dimension
    # auto: likelihood, calibrated and batch for classification with completion prompts, else generate
    scoring: list[Literal["generate", "likelihood", "calibrated", "batch", "auto"]] = Field(
        default_factory=lambda: ["auto"], min_length=1)
    # label readouts (likelihood, calibrated, batch) of one prompt come from the same LM responses: joint
    # (None, the default) scores every trial under each and keeps the best one, at one calibration call's
    # cost; searched makes the readout a search dimension like any other (joint needs label readouts only;
    # batch needs joint: its offsets exist once a trial has scored the whole validation split)
    readouts: Literal["joint", "searched"] | None = None
    demo_orders: int = Field(default=2, ge=1, le=16)  # orders tried per demo set (1: as selected)
    # the winner: the best validation mean, or the shortest prompt within the best's 95% interval
    pick: Literal["best", "shortest"] = "best"
    # the first trial, the incumbent later trials race against: the seed prompt, or the seed instruction
    # with start_demos demos of the first fixed demo set (the seed prompt then runs second, and is pruned
    # early when it is weak, as a zero-shot prompt on a small base model is), or (knn) the seed instruction
    # with each input's start_demos nearest training examples (the first fixed set when there is no kNN pool),
    # or (demos+knn) both, the fixed set first and the kNN pool second
    start: Literal["seed", "demos", "knn", "demos+knn"] = "demos+knn"
    start_demos: int | None = Field(default=None, ge=1)  # demos of the `start: demos|knn` trial (None: max_demos)
    # trials TPE draws at random before it models the finished ones (None: a quarter of the trials, at least 4)
    startup_trials: int | None = Field(default=None, ge=1)
    # a validation split smaller than this is topped up from the end of the train split (the demo pool
    # keeps at least half of its examples): more examples to select on, fewer to draw demos from
    min_validation: int | None = Field(default=None, ge=1)
    # what a trial maximises on validation: the metric's mean, or (tasks with a label set; the mean elsewhere)
    # the label-balanced mean: each label's examples weigh the same in all, so that a prompt that answers one
    # label everywhere scores 1/K under accuracy whatever the split's label shares (a small model's usual
    # collapse), and a split skewed towards one label does not pick the prompts that collapse onto it
    objective: Literal["mean", "balanced"] = "balanced"
    # training examples (seeded, label-stratified; 0: none) that trials are scored on beside validation,
    # each answered without itself among the demos (a kNN prompt retrieves its other nearest pool examples,
    # a fixed set leaves that example out): cross-fitting, more evidence to select on without moving
    # examples out of the demo pool; the reported validation score stays the validation split's
    crossfit: int = Field(default=60, ge=0)
    # reflective mutation inside the search (GEPA's way, ``optimizer.run.reflect``): rounds in which the
    # proposer LM reads the incumbent's failures on a minibatch and writes an instruction that joins the pool
    # only if it beats the incumbent there (0: none; needs the run's own storage and a one-call task)
    reflect: int = Field(default=0, ge=0)


ONE_CALL_STEP = "call"  # the step name of a one-call task whose ``output`` lists several fields


class StepSpec(_Strict):
    """One call of a program of several steps: the fields it reads (task inputs or earlier steps' outputs),
    the field it writes (``output``; omitted: the task's output, which one step must write) and its seed
    instruction. An intermediate output may name a data ``column`` (and ``pattern``): its values give the
    step's demos straight from the data, beside the traces the bootstrap keeps."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    instruction: str = Field(min_length=1)
    inputs: list[str] = Field(min_length=1)
    # one field, or several written in order in one answer (the last is the step's answer)
    output: OutputSpec | list[OutputSpec] | None = None
    max_tokens: int | None = Field(default=None, gt=0)  # per call of this step; default: the task's


class TaskSpec(_Strict):
    task: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int | str = 1
    description: str = ""
    include: str | list[str] | None = None  # already merged by load_task; kept for the record
    dataset: DatasetSpec
    splits: SplitsSpec
    inputs: list[FieldSpec] = Field(min_length=1)
    output: OutputSpec
    instruction: str = Field(min_length=1)
    program: Literal["predict", "chain_of_thought"] = "predict"
    # a program of calls wired by field names (``optimizer.steps``); None: one call of one output field
    steps: list[StepSpec] | None = Field(default=None, min_length=1)
    metric: MetricSpec
    lm: str = "local"  # an LM profile name (configs/lm/NAME.yaml) or a path
    adapter: Literal["auto", "completion", "chat"] = "auto"
    max_tokens: int | None = Field(default=None, gt=0)  # per call; default from the program kind
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)

    # where the file was read from; set by load_task, not part of the YAML
    _path: Path | None = None
    _extra_outputs: list[OutputSpec] = []  # a step's task: the fields it writes before its output

    @staticmethod
    def _several_outputs(data: Any) -> Any:
        """``output`` as a list: one call writing several fields in order, the last scored. It is a program of
        one step (``ONE_CALL_STEP``) reading every input, so demos, parsing, the run directory and the yaml
        export are the programs' own."""
        if not (isinstance(data, dict) and isinstance(data.get("output"), list)):
            return data
        outs = data["output"]
        if data.get("steps") is not None:
            raise ValueError("`output` is one field in a program of `steps`; list several fields under the step "
                             "that writes them (`steps.N.output`)")
        if len(outs) < 2:
            raise ValueError("`output` as a list names two or more fields (one field: write it as a mapping)")
        if data.get("program", "predict") != "predict":
            raise ValueError("several outputs do not combine with `program: chain_of_thought`: list a "
                             "`reasoning` field first instead")
        names = [f.get("name") for f in data.get("inputs") or [] if isinstance(f, dict)]
        step = {"name": ONE_CALL_STEP, "inputs": names, "output": outs}
        if "instruction" in data:
            step["instruction"] = data["instruction"]
        return {**data, "output": outs[-1], "steps": [step]}

    @model_validator(mode="before")
    @classmethod
    def _program_instruction(cls, data: Any) -> Any:
        """A program of steps needs no top-level instruction: it defaults to the answering step's."""
        data = cls._several_outputs(data)
        if isinstance(data, dict) and "instruction" not in data and isinstance(data.get("steps"), list):
            steps = [st for st in data["steps"] if isinstance(st, dict)]
            final = next((st for st in steps if "output" not in st), steps[-1] if steps else {})
            if isinstance(final.get("instruction"), str):
                data = {**data, "instruction": final["instruction"]}
        return data

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fields_distinct(self) -> "TaskSpec":
        names = [f.name for f in self.inputs] + [self.output.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be distinct; repeated: {', '.join(dupes)}")
        if "reasoning" in names and self.program == "chain_of_thought":
            raise ValueError("`reasoning` is reserved for chain_of_thought; rename the field")
        if self.steps and self.program != "predict":
            raise ValueError("a program of `steps` is its own program; remove `program: chain_of_thought` "
                             "(write a reasoning step instead)")
        if self.splits.stratify and not self.label_set:
            raise ValueError("splits.stratify needs a label set (output.labels or metric.labels); "
                             "remove it for a task without labels")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def step_outputs(self, step: StepSpec) -> list[OutputSpec]:
        """The fields a step writes, in the order its answer gives them (the task's output when the step names
        none; the task's own spec wherever a step names it)."""
        given = [self.output] if step.output is None else step.output if isinstance(step.output, list) else [step.output]
        return [self.output if f.name == self.output.name else f for f in given]

    def step_output(self, step: StepSpec) -> OutputSpec:
        """A step's answer field: the last it writes."""
        return self.step_outputs(step)[-1]

    def data_fields(self) -> list[tuple[str, OutputSpec]]:
        """The intermediate step outputs whose values the data holds (``column``): (where, output)."""
        return [(self._output_at(i, j), f) for i, st in enumerate(self.steps or [])
                for j, f in enumerate(self.step_outputs(st)) if f.column and f.name != self.output.name]

    @property
    def outputs_listed(self) -> bool:
        """A one-call task whose ``output`` lists several fields (a program of the one step ``ONE_CALL_STEP``)."""
        return bool(self.steps) and len(self.steps) == 1 and self.steps[0].name == ONE_CALL_STEP

    def _output_at(self, i: int, j: int) -> str:
        """Where step ``i``'s ``j``-th output is written in task.yaml."""
        if self.outputs_listed:
            return f"output.{j}"
        return f"steps.{i}.output" + (f".{j}" if isinstance(self.steps[i].output, list) else "")

    def step_order(self) -> list[int]:
        """The steps' indices in the order they run: each after the steps whose outputs it reads (ties:
        the file's order). Raises ConfigError naming the step and field of a missing writer or a cycle."""
        steps = self.steps or []
        where = str(self._path) if self._path else "<task>"
        writers: dict[str, int] = {}
        for i, st in enumerate(steps):
            outs = self.step_outputs(st)
            for j, f in enumerate(outs):
                at = self._output_at(i, j) + ".name"
                if f.name in writers or f.name in self.input_names or f.name in [g.name for g in outs[:j]]:
                    other = f"step `{steps[writers[f.name]].name}`" if f.name in writers else (
                        "the task inputs" if f.name in self.input_names else "its own earlier output")
                    raise ConfigError(f"step `{st.name}` writes `{f.name}`, which {other} already provide",
                                      file=where, field=at, fix="give each step's output its own name")
                if f.name == self.output.name and j != len(outs) - 1:
                    raise ConfigError(f"step `{st.name}` writes the task's output `{f.name}` before its other "
                                      "outputs", file=where, field=at, fix="write the task's output last")
                writers[f.name] = i
        if self.output.name not in writers:
            raise ConfigError(f"no step writes the task's output `{self.output.name}`", file=where, field="steps",
                              fix="leave the last step's `output` out (it then writes the task's output)")
        for i, st in enumerate(steps):
            for f in st.inputs:
                if f not in writers and f not in self.input_names:
                    known = ", ".join(self.input_names + list(writers))
                    raise ConfigError(f"step `{st.name}` reads `{f}`, which no step writes and no task input is",
                                      file=where, field=f"steps.{i}.inputs", fix=f"read one of {known}")
        order: list[int] = []
        done: set[str] = set(self.input_names)
        while len(order) < len(steps):
            ready = [i for i, st in enumerate(steps) if i not in order and all(f in done for f in st.inputs)]
            if not ready:
                left = [i for i in range(len(steps)) if i not in order]
                i = left[0]
                f = next(f for f in steps[i].inputs if f not in done)
                names = ", ".join(f"`{steps[j].name}`" for j in left)
                raise ConfigError(f"steps {names} form a cycle: step `{steps[i].name}` reads `{f}`, which step "
                                  f"`{steps[writers[f]].name}` writes, and no order of them gives each its inputs",
                                  file=where, field=f"steps.{i}.inputs",
                                  fix="a step may read only task inputs and the outputs of steps before it")
            order.append(ready[0])
            done.update(f.name for f in self.step_outputs(steps[ready[0]]))
        return order

    def step_task(self, i: int) -> "TaskSpec":
        """Step ``i`` as a task of one call: its inputs (task inputs, or earlier steps' outputs shown with
        their prefixes), its output and instruction; the data, metric and settings are the task's."""
        assert self.steps is not None
        st = self.steps[i]
        fields = {f.name: f for f in self.inputs}
        for other in self.steps:
            for out in self.step_outputs(other):
                fields.setdefault(out.name, FieldSpec(name=out.name, prefix=out.prefix, description=out.description))
        outs = self.step_outputs(st)
        spec = self.model_copy(update={
            "inputs": [fields[f] for f in st.inputs], "output": outs[-1], "instruction": st.instruction,
            "program": "predict", "steps": None, "max_tokens": st.max_tokens or self.max_tokens})
        spec._path = self._path
        spec._extra_outputs = outs[:-1]
        return spec

    @property
    def extra_outputs(self) -> list[OutputSpec]:
        """Fields one call writes before its output (a step that writes several; ``step_task``)."""
        return list(self._extra_outputs)

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def label_set(self) -> list[str] | None:
        if self.metric.labels:
            return list(self.metric.labels)
        if self.output.labels:
            return list(dict.fromkeys(self.output.labels.values()))
        return None

    @property
    def objective(self) -> str:
        """What trials maximise: ``balanced`` where asked for and the task has a label set, else ``mean``."""
        return "balanced" if self.optimizer.objective == "balanced" and self.label_set else "mean"

    def resolved(self) -> dict[str, Any]:
        """The task as plain data with data files made absolute (written to the run directory)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        files = data.get("dataset", {}).get("files")
        if files:
            for split, value in files.items():
                items = value if isinstance(value, list) else [value]
                absolute = [str((self.base_dir / f).resolve()) for f in items]
                files[split] = absolute if isinstance(value, list) else absolute[0]
        data.pop("include", None)
        return data


# --------------------------------------------------------------------- loading

def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError("include cycle", file=str(path), field="include", fix="remove the circular include")
    data = read_yaml(path)
    includes = data.get("include")
    if includes is None:
        return data
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        if not isinstance(inc, str):
            raise ConfigError("include must be a file path or a list of paths", file=str(path), field="include",
                              fix="write `include: base.yaml`")
        inc_path = (path.parent / inc).resolve()
        merged = _deep_merge(merged, _anchor_paths(_with_includes(inc_path, seen + (path,)), inc_path.parent))
    return _deep_merge(merged, data)


def _anchor_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in an included file are relative to that file: make them absolute before merging."""
    data = dict(data)
    ds = data.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("files"), dict):
        files = {}
        for split, value in ds["files"].items():
            items = value if isinstance(value, list) else [value]
            absolute = [str(base / f) if isinstance(f, str) else f for f in items]
            files[split] = absolute if isinstance(value, list) else absolute[0]
        data["dataset"] = {**ds, "files": files}
    metric = data.get("metric")
    if isinstance(metric, dict) and isinstance(metric.get("function"), str):
        target, sep, attr = metric["function"].rpartition(":")
        if sep and (target.endswith(".py") or "/" in target) and not Path(target).is_absolute():
            data["metric"] = {**metric, "function": f"{base / target}:{attr}"}
    return data


def load_task(path: str | Path) -> TaskSpec:
    """Read, merge includes, and validate a task file. Raises ConfigError."""
    path = Path(path)
    data = _with_includes(path)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, str(path), TaskSpec) from None
    spec._path = path.resolve()
    if spec.steps:
        spec.step_order()
    return spec


def task_from_dict(data: dict[str, Any], base_dir: str | Path | None = None, name: str = "<task>") -> TaskSpec:
    """Validate a task given as a dict (for tests and for reloading run directories)."""
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, name, TaskSpec) from None
    if base_dir is not None:
        spec._path = Path(base_dir).resolve() / "task.yaml"
    if spec.steps:
        spec.step_order()
    return spec


def apply_preset(task: TaskSpec, ref: str) -> TaskSpec:
    """The task with an optimizer preset applied: ``configs/optimizer/NAME.yaml`` (or a path) holds
    ``optimizer:`` settings that replace the task file's (the keys it gives; the rest stay)."""
    candidates = [Path(ref)] if ref.endswith((".yaml", ".yml")) or "/" in ref else [
        d / f"{ref}{ext}" for d in (Path.cwd() / "configs" / "optimizer", task.base_dir / "configs" / "optimizer",
                                   REPO_CONFIGS / "optimizer") for ext in (".yaml", ".yml")]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        known = sorted({p.stem for d in (Path.cwd() / "configs" / "optimizer", REPO_CONFIGS / "optimizer")
                        if d.exists() for p in d.glob("*.y*ml")})
        raise ConfigError(f"unknown optimizer preset {ref!r}", field="--preset",
                          fix=f"use one of {', '.join(known) or '(none found)'} or a path to a preset YAML")
    data = read_yaml(path)
    body = data.get("optimizer") if isinstance(data, dict) else None
    if not isinstance(body, dict) or set(data) - {"optimizer", "description"}:
        raise ConfigError("a preset is a mapping with one `optimizer:` block (and an optional `description:`)",
                          file=str(path), field="optimizer", fix="write `optimizer:` followed by its settings")
    try:
        opt = OptimizerSpec.model_validate({**task.optimizer.model_dump(), **body})
    except ValidationError as exc:
        err = validation_error_to_config_error(exc, str(path), OptimizerSpec)
        if err.field:
            err.field = "optimizer." + err.field
        raise err from None
    spec = task.model_copy(update={"optimizer": opt})
    spec._path = task._path
    return spec
