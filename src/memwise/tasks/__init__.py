"""Tasks and their scoring: lexical metrics and an LLM judge with per-type rubrics, task suites, environments.

- :mod:`memwise.tasks.metrics`: normalisation, :func:`exact_match`, :func:`token_f1`, and the
  :class:`Metric` protocol (a :class:`Score` with textual feedback).
- :mod:`memwise.tasks.judge`: :class:`LLMJudge`, with pure prompt building and verdict parsing.
- :mod:`memwise.tasks.rubrics` and :mod:`memwise.tasks.question_types`: which rubric a LongMemEval
  type or LoCoMo category gets, and how their spellings resolve.
- :mod:`memwise.tasks.suites`, :mod:`memwise.tasks.envs` and :mod:`memwise.tasks.types`: the task
  suites (MMLU, AIME, GPQA, HLE, HotpotQA, ALFWorld), interactive environments and the task record.

Nothing is re-exported: names are imported from their own modules, so loading one (a task suite, say)
does not load the judge and its model and ledger dependencies with it.
"""
