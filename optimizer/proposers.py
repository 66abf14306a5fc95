"""Instruction proposers: where candidate instructions come from.

``InstructionProposer.propose(context, n)`` returns up to ``n`` new
instructions. Registered proposers:

- ``offline``: mutation operators that need no LM (rephrasings from the field
  names, output-format constraints, label definitions, a role, step by step).
- ``lm``: the proposer LM reads labeled training examples and writes an
  instruction (APE style); a chat writer (``optimizer.proposer_lm`` naming an
  instruct model) also gets the task and a summary of the answers in the data,
  and may write up to three sentences. Its drafts are filtered (``check``: length,
  on topic, no quoted inputs, no duplicates); when the LM cannot write usable
  ones, fewer come back and the offline operators fill the pool.
- ``reflective``: the task prompt is run on a probe of training examples; the
  proposer LM sees the instruction, the examples it got wrong (expected and
  produced answers) and the history of instructions tried so far with their
  probe scores (ProTeGi/GEPA-style reflection with an OPRO-style history) and
  writes a fix; each draft that passes the filters is scored on the same probe
  and joins the history, and enters the pool only when it beats the instruction
  it was written from on that probe (GEPA's acceptance). Same filters and the
  same fallback as ``lm``.

Every draft an LM wrote is recorded in the proposer notes (candidates.json):
``accepted`` with the check it passed (its words, the task words it shares, and
for reflective drafts the probe scores against its parent), ``rejected`` with
the reason.

The seed instruction is always candidate 0 and is not a proposer's job.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .errors import LMCallFailed
from .examples import Example
from .lm.base import LMBackend, LMRequest, Usage
from .plugins import PROPOSERS
from .task import TaskSpec


@dataclass
class ProposalContext:
    task: TaskSpec
    train: list[Example]
    seed: int
    lm: LMBackend | None = None
    chat: bool = False  # the proposer LM takes chat messages
    notes: dict[str, Any] = field(default_factory=dict)
    evaluator: Any = None  # scores drafts on training examples (the reflective proposer)
    scoring: str = "generate"  # how the evaluator reads answers for those probes


@dataclass(frozen=True)
class Proposal:
    text: str
    origin: str
    check: dict[str, Any] | None = None  # what an LM-written draft passed (None: not written by an LM)


def _record(ctx: ProposalContext, text: str, origin: str, check: dict[str, Any]) -> None:
    """One LM draft in the notes: ``accepted`` (with its check) or ``rejected`` (with the reason)."""
    key = "accepted" if check.get("passed") else "rejected"
    ctx.notes.setdefault(key, []).append({"origin": origin, "text": text,
                                          **{k: v for k, v in check.items() if k != "passed"}})


class InstructionProposer(ABC):
    """Base of every proposer, registered in ``optimizer.plugins.PROPOSERS``. How a proposer takes part
    in the instruction pool is said by its capabilities (class attributes), never by its name."""

    #: registry name ("offline", "lm", "reflective")
    name: str = ""
    #: ``propose`` calls the proposer LM (``ctx.lm``) or the task LM (``ctx.evaluator``); otherwise it
    #: is a pure function of the task and the seed
    makes_lm_calls: bool = False
    #: the pool's order: proposers of a lower rank fill it first (the pool keeps the first of equal texts)
    pool_rank: int = 0
    #: the share of the room left in the pool a proposer is asked for: ``room // pool_share`` (at least 1)
    pool_share: int = 1

    @abstractmethod
    def propose(self, ctx: ProposalContext, n: int) -> list[Proposal]:
        """Up to n distinct instructions, deterministic for a given ctx.seed."""

    @classmethod
    def share(cls, room: int) -> int:
        """How many instructions to ask for when the pool has ``room`` places left."""
        return max(1, room // cls.pool_share) if room > 0 else 0

    @classmethod
    def planned_calls(cls, task: TaskSpec, train: list[Example], n: int) -> list[LMRequest] | None:
        """The LM requests ``propose(ctx, n)`` makes at most, for a plan's estimate before any call (the
        first examples stand in for drawn ones); [] for none, None where it is not estimated."""
        return []


def _join(words: list[str], last: str = "or") -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


class OfflineProposer(InstructionProposer):
    """Rule-based mutations of the seed instruction."""

    name = "offline"
    pool_rank = 2  # fills what the LM proposers leave

    def operators(self, task: TaskSpec) -> list[Proposal]:
        seed = task.instruction.strip()
        seed_dot = seed if seed.endswith((".", "?", "!", ":")) else seed + "."
        ins = _join([f.noun for f in task.inputs], "and")
        out = task.output.noun
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
            "step", "this", "that", "with", "from", "your", "what", "which", "should", "will", "into", "them",
            "then", "than", "when", "after", "before", "also", "only", "just", "some", "more", "most", "very",
            "such", "here", "there", "have", "been", "were", "does", "make", "calls"}


# capitalised past a sentence's start (a list run into one line, a heading), never a name
_NOT_NAMES = _GENERIC | {"the", "and", "any", "all", "its", "their", "our", "you", "for", "but", "not", "one", "these",
                         "those", "other", "both", "every", "each", "how", "why", "who", "where", "use", "read",
                         "decide", "look", "consider", "note", "first", "next", "finally", "otherwise"}


def task_vocabulary(task: TaskSpec, shots: list[Example]) -> set[str]:
    """Content words an on-topic instruction is expected to share with the task: its own words, and the
    examples' answers where they are short (labels, names, numbers). A long answer (a worked solution, a
    program step's text) is example content: a draft sharing only one of its words, say "after", with it is
    not on topic."""
    text = " ".join([task.instruction, task.description, task.output.label, task.output.name,
                     *(f.label for f in task.inputs), *(f.name for f in task.inputs), *(task.label_set or []),
                     *(ex.output for ex in shots if len(ex.output.split()) <= 3)])
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 4} - _GENERIC


_CHAT_ASK = ("Write the instruction, addressed to the model, in one to three sentences: what to decide and what to "
             "look for in the input. Start with a verb. Do not quote the examples. Reply with the instruction only.")


_REFLECT_ASK = ("Reply with the improved instruction only: one to three sentences addressed to the model, for every "
                "input of the task. Do not repeat the examples, their answers or this request.")

#: the fixed sentences of the writers' requests (APE's, the chat writer's, reflection's): a draft that repeats
#: one of them copied its request (TREC, instruct model: "Here's an improved instruction: Instructions tried
#: so far, with their accuracy (higher is better): 0.51: Classify ..." was accepted and won)
_WRITER_LINES = ("You are writing the instruction of a prompt. A language model reads the instruction, then an input, "
                 "and writes the answer.",
                 "An instruction for a task was tried on examples. These are examples it got wrong.",
                 "Instructions tried so far, with their accuracy (higher is better):",
                 "Write one improved instruction that avoids these mistakes.",
                 "Examples of inputs with their correct answers:",
                 "Write one clear sentence that instructs someone how to do this task.")


def _flat(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation and spacing do not hide a quotation)."""
    return " ".join(w.lower() for w in re.findall(r"[A-Za-z0-9]+", text))


def _echoes(flat: str, request: str, n: int = 4) -> bool:
    """The draft repeats ``n`` consecutive words of ``request`` (the request it was given, or an input)."""
    words = request.split()
    return any(" ".join(words[i:i + n]) in flat for i in range(len(words) - n + 1))


def _repeats_a_sentence(text: str) -> bool:
    """A sentence (or numbered step) of three words or more comes twice: a writer looping, not instructing
    (AG News, instruct model, a reflection draft: "1. Classify the news article by topic. Classify the news
    article by topic. 2. Classify the news article by topic.")."""
    parts = [_flat(p) for p in re.split(r"(?<=[.!?;])\s+|\s*\b\d+\.\s+", text)]
    parts = [p for p in parts if len(p.split()) >= 3]
    return len(parts) != len(set(parts))


def _labels_named(text: str, labels: list[str]) -> list[str]:
    """The labels a draft names (whole words, any case). Naming one label of three or more is steering every
    input to it (an instruct model answering an example: "Classify the topic of the news article as
    technology."); a two-label task's instruction may name one ("Answer yes if the sentence is plausible.")."""
    return [lab for lab in labels if re.search(rf"\b{re.escape(lab)}\b", text, flags=re.I)]


def _names_from(text: str, shots: list[Example], vocab: set[str]) -> list[str]:
    """Capitalised words past a sentence's start that come from one example's input and not from the task's
    own words (a person, a place, a title): an instruction about one example, not the task."""
    inputs = " ".join(v for ex in shots for v in ex.inputs.values())
    out = []
    for m in re.finditer(r"(?<![.!?:]\s)(?<!^)\b([A-Z][a-z]{2,})\b", text):
        w = m.group(1)
        if w.lower() in _NOT_NAMES:  # "... the input itself The answer ...": a list the draft ran together
            continue
        if w.lower() not in vocab and re.search(rf"\b{w}\b", inputs) and w not in out:
            out.append(w)
    return out


class LMProposer(InstructionProposer):
    """The proposer LM induces an instruction from labeled examples (APE style)."""

    name = "lm"
    makes_lm_calls = True
    pool_rank = 1
    pool_share = 2

    def __init__(self, examples_per_prompt: int = 5, drafts_per_slot: int = 2, max_tokens: int = 60):
        self.k = examples_per_prompt
        self.drafts = drafts_per_slot
        self.max_tokens = max_tokens

    @classmethod
    def planned_calls(cls, task: TaskSpec, train: list[Example], n: int) -> list[LMRequest] | None:
        if n <= 0 or not train:
            return []
        prop = cls()
        meta = LMRequest(prompt=prop._meta_prompt(task, train[: prop.k]), max_tokens=prop.max_tokens)
        return [meta] * (n * prop.drafts)

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

    def _chat_prompt(self, task: TaskSpec, train: list[Example], shots: list[Example]) -> str:
        """The request to an instruction-following writer (MIPROv2's grounding): what the task is, its input
        and answer fields, a summary of the data (the answers and how often each occurs) and labeled
        examples; it asks for one to three sentences and nothing else."""
        counts: dict[str, int] = {}
        for ex in train:
            counts[ex.output] = counts.get(ex.output, 0) + 1
        fields = ", ".join(f.label for f in task.inputs)
        lines = ["You are writing the instruction of a prompt. A language model reads the instruction, then an "
                 "input, and writes the answer.",
                 f"Task: {task.description or task.instruction}",
                 f"The input: {fields}. The answer: {task.output.label}."]
        if task.label_set:
            lines.append(f"The answer is one of: {_join(list(task.label_set))}.")
        if len(counts) <= 12:
            shares = sorted(counts.items(), key=lambda kv: -kv[1])
            lines.append("Answers in the training data: " + ", ".join(f"{a} {100 * n / len(train):.0f}%"
                                                                      for a, n in shares) + ".")
        lines += ["", "Examples of inputs with their correct answers:", ""]
        for ex in shots:
            lines += [f"{f.label}: {ex.inputs[f.name][:300]}" for f in task.inputs]
            lines += [f"{task.output.label}: {ex.output}", ""]
        lines.append(_CHAT_ASK)
        return "\n".join(lines)

    def _draft(self, ctx: ProposalContext, prompt: str, sample: int) -> str:
        """One sampled draft from the proposer LM, whitespace collapsed: a completion's first line, or a chat
        writer's whole reply (up to three sentences) without a leading "Instruction:" or quotes."""
        if ctx.chat:
            req = LMRequest.chat([{"role": "user", "content": prompt}], max_tokens=2 * self.max_tokens,
                                 temperature=0.8, sample=sample)
            text = " ".join(ctx.lm.complete(req).text.split())
            text = re.sub(r"</?instruction>|\*\*|(?<=\s)- ", " ", text, flags=re.I)
            text = re.sub(r"^\s*(?:(?:sure|certainly|okay|ok)[,.!]?\s+)?(?:here(?:'s| is) (?:an? |the |my )?)?"
                          r"(?:improved |new |revised )?instruction\s*:\s*", "", text, flags=re.I)
            text = text.strip().strip('"\'`').strip()
            # up to three sentences, a numbered step ("1. ...") counting as one
            parts = re.split(r"(?<=[A-Za-z)\]'\"][.!?])\s+|\s+(?=\d+\.\s)", text)
            return " ".join(" ".join(parts[:3]).split())
        req = LMRequest(prompt=prompt, max_tokens=self.max_tokens, temperature=0.8, stop=("\n",), sample=sample)
        text = ctx.lm.complete(req).text
        return " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""

    def check(self, text: str, ctx: ProposalContext, shots: list[Example]) -> dict[str, Any]:
        """The filters a draft must pass: ``{"passed": bool, ...}`` with the draft's word count and the
        task words it shares when it passes, else the first reason it fails."""
        words = _WORD.findall(text)
        if not (4 <= len(words) <= 80):
            return {"passed": False, "reason": f"{len(words)} words (4 to 80 wanted)"}
        if sum(len(w) for w in words) < 0.6 * len(text.replace(" ", "")):
            return {"passed": False, "reason": "mostly symbols or numbers"}
        low = text.lower()
        words_low = {w.lower() for w in words}
        # on topic: shares a content word (or its stem) with the task, not just "do this task"
        vocab = task_vocabulary(ctx.task, shots)
        shared = sorted(w for w in words_low - _GENERIC
                        if w in vocab or any(w[:5] == v[:5] for v in vocab if len(w) >= 5 and len(v) >= 5))
        if not shared:
            return {"passed": False, "reason": "off topic: shares no content word with the task"}
        flat = _flat(text)
        for ex in shots:
            for v in ex.inputs.values():
                if len(v) > 20 and (_flat(v)[:30] in flat or _echoes(flat, _flat(v), 6)):
                    return {"passed": False, "reason": "quotes a training input"}
        named = _names_from(text, shots, vocab)
        if named:
            return {"passed": False, "reason": f"names what one example is about ({', '.join(named)})"}
        if ":" in text.rstrip(":")[-20:] or low.startswith(("input", "output")):
            return {"passed": False, "reason": "reads as a field, not an instruction"}
        if text.rstrip().endswith("?"):
            return {"passed": False, "reason": "a question, not an instruction"}
        if _repeats_a_sentence(text):
            return {"passed": False, "reason": "repeats one of its sentences"}
        one = re.search(r"\b(?:correct )?answer is:?\s+[\"'`]?([A-Za-z]+)[\"'`]?\s*(?:[.!]|$)", text)
        if one and ctx.task.label_set and one.group(1).lower() in {lab.lower() for lab in ctx.task.label_set}:
            return {"passed": False, "reason": f"gives one answer for every input ({one.group(1)})"}
        named_labels = _labels_named(text, ctx.task.label_set or [])
        if len(ctx.task.label_set or []) >= 3 and len(named_labels) == 1:  # "classify the article as sports"
            return {"passed": False, "reason": f"names one answer of several ({named_labels[0]})"}
        asks = (_CHAT_ASK, _REFLECT_ASK) if ctx.chat else ()
        if (any(_echoes(flat, _flat(line)) for line in asks)
                or any(_echoes(flat, _flat(line), 5) for line in _WRITER_LINES)
                or re.search(r"(?:^|\s)[01]\.\d\d:\s", text)):  # or a score line of the history
            return {"passed": False, "reason": "repeats the request it was given"}
        return {"passed": True, "words": len(words), "task_words": shared}

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
            prompt = (self._chat_prompt(ctx.task, ctx.train, shots) if ctx.chat
                      else self._meta_prompt(ctx.task, shots))
            try:
                text = self._draft(ctx, prompt, slot)
            except LMCallFailed as exc:  # a call lost after retries: keep the offline pool
                ctx.notes["lm_proposer_error"] = str(exc)
                break
            if not text or text.lower() in seen:
                continue
            check = self.check(text, ctx, shots)
            _record(ctx, text, "lm", check)
            if check["passed"]:
                seen.add(text.lower())
                found.append(Proposal(text, "lm", check))
        ctx.notes["lm_drafts"] = slot + 1 if n else 0
        ctx.notes["lm_accepted"] = len(found)
        return found


class ReflectiveProposer(LMProposer):
    """Reflection on failures plus a scored history (ProTeGi / GEPA / OPRO style)."""

    name = "reflective"
    pool_rank = 0
    pool_share = 3

    @classmethod
    def planned_calls(cls, task: TaskSpec, train: list[Example], n: int) -> list[LMRequest] | None:
        return None  # rounds stop early on probe scores: not estimated (plans leave it out)

    def __init__(self, probe: int = 12, demos: int = 4, rounds: int = 2, drafts_per_round: int = 2,
                 failures_shown: int = 3, max_tokens: int = 60):
        super().__init__(examples_per_prompt=failures_shown, drafts_per_slot=drafts_per_round, max_tokens=max_tokens)
        self.probe = probe
        self.n_demos = demos
        self.rounds = rounds

    def _reflect_prompt(self, task: TaskSpec, current: str, failures: list[tuple[Example, str]],
                        history: list[tuple[float, str]], chat: bool = False) -> str:
        """The reflection request; a chat writer is also told to reply with the instruction alone (the
        instruct model otherwise continued the failures' format: "... Expected sentiment: negative
        Produced: positive")."""
        lines = ["An instruction for a task was tried on examples. These are examples it got wrong.", "",
                 f"Instruction: {current}", ""]
        for ex, produced in failures[: self.k]:
            for f in task.inputs:
                lines.append(f"{f.label}: {ex.inputs[f.name][:300]}")
            lines.append(f"Expected {task.output.label.lower()}: {ex.output}")
            lines.append(f"Produced: {produced[:80] or '(nothing)'}")
            lines.append("")
        lines.append("Instructions tried so far, with their accuracy (higher is better):")
        for score, text in sorted(history):
            lines.append(f"{score:.2f}: {text}")
        lines.append("")
        lines.append("Write one improved instruction that avoids these mistakes.")
        if chat:
            lines.append(_REFLECT_ASK)
            return "\n".join(lines)
        lines.append("Improved instruction:")
        return "\n".join(lines)

    def propose(self, ctx: ProposalContext, n: int) -> list[Proposal]:
        if ctx.lm is None or ctx.evaluator is None or n <= 0 or len(ctx.train) < 2:
            return []
        from .program import Candidate

        rng = random.Random(f"{ctx.seed}:reflective")
        pool = list(ctx.train)
        rng.shuffle(pool)
        demos = tuple(pool[: min(self.n_demos, len(pool) // 2)])
        probe = pool[len(demos):][: self.probe]

        backend = ctx.evaluator.backend
        probe_usage = Usage()
        wrong_of: dict[str, list[tuple[Example, str]]] = {}  # instruction -> its probe failures

        def run(text: str) -> float:
            nonlocal probe_usage
            cand = Candidate(text, demos, {"role": "reflective-probe"}, scoring=ctx.scoring)
            u0 = backend.usage
            try:
                res = ctx.evaluator.evaluate(cand, probe)
            finally:
                probe_usage = probe_usage + (backend.usage - u0)
            wrong_of[text] = [(ex, str(o.prediction.get(ctx.task.output.name, "")))
                              for ex, o in zip(probe, res.outcomes) if o.score < 1]
            return res.mean

        current = ctx.task.instruction.strip()
        history = [(run(current), current)]
        failures = wrong_of[current]
        seen = {current.lower()}
        found: list[Proposal] = []
        drafts = 0
        for r in range(self.rounds):
            if len(found) >= n or not failures:
                break
            prompt = self._reflect_prompt(ctx.task, current, failures, history, chat=ctx.chat)
            for d in range(self.drafts):
                if len(found) >= n:
                    break
                drafts += 1
                sample = r * self.drafts + d
                try:
                    text = self._draft(ctx, prompt, sample)
                except LMCallFailed as exc:  # a lost call: keep what we have, the offline pool fills the rest
                    ctx.notes["reflective_error"] = str(exc)
                    break
                if not text or text.lower() in seen:
                    continue
                seen.add(text.lower())
                check = self.check(text, ctx, [ex for ex, _ in failures])
                if check["passed"]:
                    score, parent_score = run(text), dict((t, sc) for sc, t in history)[current]
                    history.append((score, text))
                    check = {**check, "parent": current, "probe": round(score, 4),
                             "parent_probe": round(parent_score, 4), "probe_examples": len(probe)}
                    if score <= parent_score:
                        check = {**check, "passed": False, "reason": "does not beat its parent on the probe"}
                _record(ctx, text, "reflective", check)
                if check["passed"]:
                    found.append(Proposal(text, "reflective", check))
            current = max(history)[1]  # reflect on the best instruction so far next round
            failures = wrong_of[current]
        ctx.notes["reflective_drafts"] = drafts
        ctx.notes["reflective_accepted"] = len(found)
        ctx.notes["reflective_history"] = [{"score": round(sc, 4), "instruction": t} for sc, t in history]
        ctx.notes["probe_usage"] = probe_usage.to_dict()  # task-LM calls, not proposer calls
        return found


def instruction_pool(ctx: ProposalContext, size: int, kinds: list[str]) -> list[Proposal]:
    """The seed instruction, then each proposer's share of the room left in ``pool_rank`` order (LM
    proposals, then offline operators), up to ``size``."""
    pool = [Proposal(ctx.task.instruction.strip(), "seed")]
    for kind in sorted(dict.fromkeys(kinds), key=lambda k: PROPOSERS.get(k).pool_rank):
        room = size - len(pool)
        if room <= 0:
            break
        proposer = PROPOSERS.get(kind)
        for p in proposer().propose(ctx, proposer.share(room)):
            if p.text.strip().lower() not in {q.text.strip().lower() for q in pool}:
                pool.append(p)
    return pool[:size]
