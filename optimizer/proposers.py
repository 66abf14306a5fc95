"""Instruction proposers: where candidate instructions come from.

``InstructionProposer.propose(context, n)`` returns up to ``n`` new
instructions. Registered proposers:

- ``offline``: mutation operators that need no LM (rephrasings from the field
  names, output-format constraints, label definitions, a role, step by step).
- ``lm``: the proposer LM reads labeled training examples and writes an
  instruction (APE style). Its drafts are filtered (length, no copied inputs,
  no duplicates); when the LM cannot write usable ones, fewer come back and the
  offline operators fill the pool.

The seed instruction is always candidate 0 and is not a proposer's job.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .data import Example
from .lm.base import LMBackend, LMRequest
from .task import TaskSpec


@dataclass
class ProposalContext:
    task: TaskSpec
    train: list[Example]
    seed: int
    lm: LMBackend | None = None
    chat: bool = False  # the proposer LM takes chat messages
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Proposal:
    text: str
    origin: str


class InstructionProposer(ABC):
    name: str = ""

    @abstractmethod
    def propose(self, ctx: ProposalContext, n: int) -> list[Proposal]:
        """Up to n distinct instructions, deterministic for a given ctx.seed."""


def _join(words: list[str], last: str = "or") -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


class OfflineProposer(InstructionProposer):
    """Rule-based mutations of the seed instruction."""

    name = "offline"

    def operators(self, task: TaskSpec) -> list[Proposal]:
        seed = task.instruction.strip()
        seed_dot = seed if seed.endswith((".", "?", "!", ":")) else seed + "."
        ins = _join([f.label.lower() for f in task.inputs], "and")
        out = task.output.label.lower()
        labels = task.label_set
        ops: list[Proposal] = []
        if labels:
            ops.append(Proposal(f"{seed_dot} Answer with one word: {_join(labels)}.", "format"))
            ops.append(Proposal(f"Read the {ins} and label its {out} as {_join(labels)}.", "rephrase"))
            ops.append(Proposal(f"{seed_dot}\nPossible answers: {', '.join(labels)}.", "label_definitions"))
        else:
            ops.append(Proposal(f"{seed_dot} Answer with the {out} only, nothing else.", "format"))
            ops.append(Proposal(f"Read the {ins} and write the correct {out}.", "rephrase"))
        ops.append(Proposal(f"Given the {ins}, determine the {out}.", "rephrase"))
        ops.append(Proposal(f"You are an expert annotator. {seed_dot}", "role"))
        ops.append(Proposal(f"{seed_dot} Think step by step, then give the {out}.", "step_by_step"))
        if task.description:
            ops.append(Proposal(f"{task.description.strip()} {seed_dot}".strip(), "description"))
        return ops

    def propose(self, ctx: ProposalContext, n: int) -> list[Proposal]:
        ops = [p for p in self.operators(ctx.task) if p.text.strip() != ctx.task.instruction.strip()]
        first, rest = ops[:2], ops[2:]
        random.Random(f"{ctx.seed}:offline").shuffle(rest)
        return (first + rest)[:n]


_WORD = re.compile(r"[A-Za-z]+")
_GENERIC = {"task", "tasks", "following", "example", "examples", "answer", "answers", "write", "given", "each",
            "instruction", "instructions", "below", "correct", "someone", "sentence", "input", "output", "steps",
            "step", "this", "that", "with", "from", "your", "what", "which", "should", "will", "into", "them"}


def task_vocabulary(task: TaskSpec, shots: list[Example]) -> set[str]:
    """Content words an on-topic instruction is expected to share with the task."""
    text = " ".join([task.instruction, task.description, task.output.label, task.output.name,
                     *(f.label for f in task.inputs), *(f.name for f in task.inputs), *(task.label_set or []),
                     *(ex.output for ex in shots)])
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 4} - _GENERIC


class LMProposer(InstructionProposer):
    """The proposer LM induces an instruction from labeled examples (APE style)."""

    name = "lm"

    def __init__(self, examples_per_prompt: int = 5, drafts_per_slot: int = 2, max_tokens: int = 60):
        self.k = examples_per_prompt
        self.drafts = drafts_per_slot
        self.max_tokens = max_tokens

    def _meta_prompt(self, task: TaskSpec, shots: list[Example]) -> str:
        lines = ["Below are examples of a task, each with its correct answer.", ""]
        for ex in shots:
            for f in task.inputs:
                lines.append(f"{f.label}: {ex.inputs[f.name][:300]}")
            lines.append(f"{task.output.label}: {ex.output}")
            lines.append("")
        lines.append("Write one clear sentence that instructs someone how to do this task.")
        lines.append("Instruction:")
        return "\n".join(lines)

    def valid(self, text: str, ctx: ProposalContext, shots: list[Example]) -> bool:
        words = _WORD.findall(text)
        if not (4 <= len(words) <= 60):
            return False
        if sum(len(w) for w in words) < 0.6 * len(text.replace(" ", "")):
            return False  # mostly symbols or numbers
        low = text.lower()
        words_low = {w.lower() for w in words}
        # on topic: shares a content word (or its stem) with the task, not just "do this task"
        vocab = task_vocabulary(ctx.task, shots)
        if not any(w in vocab or any(w[:5] == v[:5] for v in vocab if len(w) >= 5 and len(v) >= 5)
                   for w in words_low - _GENERIC):
            return False
        for ex in shots:
            for v in ex.inputs.values():
                if len(v) > 20 and v.lower()[:40] in low:
                    return False  # quotes a training input: overfits
        return ":" not in text.rstrip(":")[-20:] and not low.startswith(("input", "output"))

    def propose(self, ctx: ProposalContext, n: int) -> list[Proposal]:
        if ctx.lm is None or n <= 0 or not ctx.train:
            return []
        rng = random.Random(f"{ctx.seed}:lm")
        found: list[Proposal] = []
        seen = {ctx.task.instruction.strip().lower()}
        for slot in range(n * self.drafts):
            if len(found) >= n:
                break
            shots = rng.sample(ctx.train, min(self.k, len(ctx.train)))
            prompt = self._meta_prompt(ctx.task, shots)
            if ctx.chat:
                req = LMRequest.chat([{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
                                     temperature=0.8, sample=slot)
            else:
                req = LMRequest(prompt=prompt, max_tokens=self.max_tokens, temperature=0.8, stop=("\n",),
                                sample=slot)
            try:
                text = ctx.lm.complete(req).text
            except Exception as exc:  # the proposer is optional: keep the offline pool
                ctx.notes["lm_proposer_error"] = str(exc)
                break
            text = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
            if text and self.valid(text, ctx, shots) and text.lower() not in seen:
                seen.add(text.lower())
                found.append(Proposal(text, "lm"))
        ctx.notes["lm_drafts"] = slot + 1 if n else 0
        ctx.notes["lm_accepted"] = len(found)
        return found


PROPOSERS: dict[str, type[InstructionProposer]] = {"offline": OfflineProposer, "lm": LMProposer}


def instruction_pool(ctx: ProposalContext, size: int, kinds: list[str]) -> list[Proposal]:
    """The seed instruction, then LM proposals, then offline operators, up to ``size``."""
    pool = [Proposal(ctx.task.instruction.strip(), "seed")]
    order = [k for k in ("lm", "offline") if k in kinds]
    for kind in order:
        room = size - len(pool)
        if room <= 0:
            break
        want = room if kind == "offline" else max(1, room // 2)
        for p in PROPOSERS[kind]().propose(ctx, want):
            if p.text.strip().lower() not in {q.text.strip().lower() for q in pool}:
                pool.append(p)
    return pool[:size]
