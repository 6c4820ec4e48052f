"""MetaMem: a learned meta-memory E of natural-language rules on how to use retrieved facts.

Answers are produced as ``LLM(prompt(q, M, E))``; E is compiled from self-reflection on rollouts, never by
touching model weights. ``rules`` holds E itself: stable rule ids, checked edits, bounded size, versions
with provenance, and the fallback used when the consolidation call fails.
"""

from __future__ import annotations

from memwise.metamem.data import MetaQuestion, load_questions, save_questions
from memwise.metamem.evaluate import EvalResult, evaluate_rules, select_best
from memwise.metamem.pipeline import MetaMemResult, load_result_rules, train_and_select
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.rules import Operation, Rule, RuleSet
from memwise.metamem.splits import Fold, make_folds, split_once
from memwise.metamem.train_checkpoint import StepRecord
from memwise.metamem.train_config import TrainConfig
from memwise.metamem.trainer import MetaMemTrainer

__all__ = [
    "EvalResult",
    "Fold",
    "MetaMemResult",
    "MetaMemTrainer",
    "MetaQuestion",
    "Operation",
    "Rule",
    "RuleHistory",
    "RuleSet",
    "StepRecord",
    "TrainConfig",
    "evaluate_rules",
    "load_questions",
    "load_result_rules",
    "make_folds",
    "save_questions",
    "select_best",
    "split_once",
    "train_and_select",
]
