"""The extension points and what is registered at each: the one place to add an implementation.

A new LM backend, demo selector, instruction proposer or metric is one class
(subclassing the kind's base: ``optimizer.lm.base.LMBackend``,
``optimizer.selectors.DemoSelector``, ``optimizer.proposers.InstructionProposer``,
``optimizer.metrics.Metric``) and one ``register`` line here (or, from outside
the package, ``SELECTORS.register("name", MySelector)``). Its capabilities are
class attributes on it. The task schema and LM profiles accept exactly the names
registered here, in this order. Each kind has a conformance suite
(``tests/test_conformance_*.py``) that every registered implementation runs.

Entries are lazy ``"module:Class"`` paths: this module imports no
implementation, so the schema can check names without loading them (the local
backend's llama.cpp is imported only when a model is loaded).
"""

from __future__ import annotations

from .registry import Registry

#: ``backend:`` of an LM profile
BACKENDS: Registry = Registry("LM backend", field="backend", base="optimizer.lm.base:LMBackend")
BACKENDS.register("local", "optimizer.lm._local:LocalBackend")
BACKENDS.register("openai", "optimizer.lm._openai:OpenAIBackend")

#: ``optimizer.selectors`` of a task
SELECTORS: Registry = Registry("demo selector", field="optimizer.selectors",
                               base="optimizer.selectors:DemoSelector")
SELECTORS.register("random", "optimizer.selectors:RandomSelector")
SELECTORS.register("bootstrap", "optimizer.selectors:BootstrapSelector")
SELECTORS.register("diverse", "optimizer.selectors:DiverseSelector")
SELECTORS.register("knn", "optimizer.selectors:KnnSelector")

#: ``optimizer.proposers`` of a task
PROPOSERS: Registry = Registry("instruction proposer", field="optimizer.proposers",
                               base="optimizer.proposers:InstructionProposer")
PROPOSERS.register("offline", "optimizer.proposers:OfflineProposer")
PROPOSERS.register("lm", "optimizer.proposers:LMProposer")
PROPOSERS.register("reflective", "optimizer.proposers:ReflectiveProposer")

#: ``metric.name`` of a task
METRICS: Registry = Registry("metric", field="metric.name", base="optimizer.metrics:Metric")
METRICS.register("exact_match", "optimizer.metrics:ExactMatch")
METRICS.register("label_accuracy", "optimizer.metrics:LabelAccuracy")
METRICS.register("contains", "optimizer.metrics:Contains")
METRICS.register("token_f1", "optimizer.metrics:TokenF1")
METRICS.register("numeric", "optimizer.metrics:Numeric")
METRICS.register("regex", "optimizer.metrics:RegexMetric")
METRICS.register("json_fields", "optimizer.metrics:JsonFields")
METRICS.register("judge", "optimizer.metrics:JudgeMetric")
METRICS.register("custom", "optimizer.metrics:CustomMetric")
