"""Benchmark tasks built only from data available offline.

Kinds:
  grounded  rewrite / quote / summarise a section of Python's reference docs given in the prompt
  docqa     a question whose answer lives in those docs (not in the prompt: for the datastore)
  docqa-rag the same questions with passages retrieved from those docs into the prompt (grounded
            chat; the runner fills the prompt in, since retrieval needs the model and the store)
  code      return a standard-library function (source via `inspect`) with a small change
  open      open-ended chat with no grounding (the no-regression guard)
  chat, qa, translate, math, summary: everyday turns (chat_tasks.py)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from .chat_tasks import CHAT, MATH, QA, SUMMARY_TOPICS, TRANSLATE

KINDS = ("grounded", "docqa", "docqa-rag", "code", "open", "chat", "qa", "translate", "math", "summary")
CHAT_KINDS = KINDS[5:]
# Tasks per kind. The quick suite fits 15 minutes on the default 1.5B model with ar, pld, sense and
# sense-soft on 2 CPU cores (plain decoding ~11 tok/s there); the full suite takes as long as it takes.
PER_KIND = {"quick": 4, "full": 16}


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    prompt: str  # the user message (the chat template is applied by the runner)
    answer: str | None = None  # for docqa: a string the answer should contain
    earlier: tuple[tuple[str, str], ...] = ()  # (question, answer) turns before the prompt (chat)

    def messages(self) -> list[dict]:
        """The conversation the model is given: the earlier turns, then the prompt."""
        out = []
        for question, answer in self.earlier:
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return out + [{"role": "user", "content": self.prompt}]


def _section(topic: str, max_chars: int) -> str:
    from pydoc_data.topics import topics

    text = topics[topic].strip()
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n\n", 0, max_chars)
    return text[: cut if cut > max_chars // 2 else max_chars]


GROUNDED = [
    ("assert", "Repeat the following documentation exactly, word for word:"),
    ("break", "Rewrite the following documentation in plain English, keeping every detail:"),
    ("with", "Quote the grammar rules and the first paragraph of this documentation:"),
    ("pass", "Summarise the following documentation, quoting its key sentences:"),
    ("return", "Repeat the following documentation exactly, word for word:"),
    ("del", "Rewrite the following documentation as a bulleted list, reusing its wording:"),
    ("continue", "Copy the following text, then explain it in one sentence:"),
    ("global", "Quote the first two paragraphs of this documentation exactly:"),
    ("nonlocal", "Repeat the following documentation exactly, word for word:"),
    ("if", "Rewrite the following documentation in plain English, keeping every detail:"),
    ("while", "Quote the grammar rules and the first paragraph of this documentation:"),
    ("raise", "Summarise the following documentation, quoting its key sentences:"),
    ("lambda", "Repeat the following documentation exactly, word for word:"),
    ("for", "Rewrite the following documentation as a bulleted list, reusing its wording:"),
    ("import", "Quote the first two paragraphs of this documentation exactly:"),
    ("try", "Copy the following text, then explain it in one sentence:"),
]

DOCQA = [
    ("assert", "What is the extended form of Python's assert statement equivalent to?", "AssertionError"),
    ("break", "In Python, what happens to the else clause of a loop when the loop is left with break?", "else"),
    ("pass", "What does Python's pass statement do?", "null operation"),
    ("del", "How does deletion of a name work with Python's del statement?", "binding"),
    ("global", "What does the global statement mean for the listed identifiers in Python?", "global"),
    ("nonlocal", "What does Python's nonlocal statement do?", "enclosing"),
    ("return", "In a generator function, what does a return statement do in Python?", "StopIteration"),
    ("lambda", "What kind of functions do lambda expressions create in Python?", "anonymous"),
    ("continue", "What does the continue statement do in a Python loop?", "next cycle"),
    ("while", "When is the else clause of a Python while loop executed?", "false"),
    ("raise", "What does a bare raise statement re-raise in Python?", "exception"),
    ("if", "How does Python's if statement select a suite to execute?", "true"),
    ("yield", "Where can a yield expression be used in Python?", "generator"),
    ("with", "What methods does a context manager need for Python's with statement?", "__exit__"),
    ("try", "When is the finally clause of a Python try statement executed?", "finally"),
    ("import", "What are the two steps of Python's basic import statement?", "find"),
]

CODE = [
    ("textwrap.dedent", "Return this function unchanged except rename it to `remove_indent`:"),
    ("shlex.quote", "Return this function with a docstring line added that says it is safe for POSIX shells:"),
    ("fnmatch.filter", "Return this function unchanged except rename the parameter `names` to `items`:"),
    ("difflib.get_close_matches", "Return this function unchanged except rename `cutoff` to `threshold`:"),
    ("glob.has_magic", "Return this function unchanged except rename it to `contains_magic`:"),
    ("string.capwords", "Return this function with the default of `sep` changed to ' ':"),
    ("colorsys.rgb_to_hsv", "Return this function unchanged except rename it to `rgb_hsv`:"),
    ("calendar.leapdays", "Return this function unchanged except add a comment on its first line:"),
    ("colorsys.hls_to_rgb", "Return this function unchanged except rename it to `hls_rgb`:"),
    ("heapq.nlargest", "Return this function unchanged except rename it to `top_n`:"),
    ("urllib.parse.quote_plus", "Return this function unchanged except rename it to `quote_spaces`:"),
    ("textwrap.indent", "Return this function unchanged except rename `prefix` to `lead`:"),
    ("calendar.isleap", "Return this function unchanged except rename it to `is_leap_year`:"),
    ("random.Random.shuffle", "Return this method unchanged except rename it to `mix`:"),
    ("statistics.median", "Return this function unchanged except rename `data` to `values`:"),
    ("json.dumps", "Return this function's signature and docstring unchanged:"),
]

OPEN = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are some good habits for staying productive when working from home?",
    "Describe your ideal weekend in the mountains.",
    "Explain why the sky is blue to a curious child.",
    "Give me a recipe idea for a quick vegetarian dinner and explain the steps.",
    "Write a letter to a friend who just moved to a new city.",
    "What are the pros and cons of electric cars?",
    "Invent a new board game and explain its rules.",
    "Tell me about the history of bicycles.",
    "How would you plan a small garden on a balcony?",
    "Write a poem about the ocean at night.",
    "What should a beginner know before adopting a cat?",
    "Describe a futuristic city in the year 2200.",
    "Give advice to someone preparing for their first job interview.",
    "Explain how to make a good cup of tea.",
    "Write a dialogue between a robot and a gardener.",
]


def _code_source(dotted: str, max_chars: int = 1400) -> str:
    import importlib

    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for p in parts[1:]:
        obj = getattr(obj, p)
    return inspect.getsource(obj)[:max_chars]


def corpus_topics(suite: str = "quick") -> list[str]:
    """pydoc topics in the benchmark's document store: every docqa answer's topic plus distractors."""
    per_kind = PER_KIND[suite]
    answers = [topic for topic, _, _ in DOCQA[:per_kind]]
    distractors = ["if", "while", "for", "try", "with", "raise", "lambda", "import", "yield", "class",
                   "function", "augassign", "comparisons", "booleans", "calls", "slicings"]
    return list(dict.fromkeys(answers + distractors[: per_kind]))


def build_tasks(suite: str = "quick") -> list[Task]:
    per_kind = PER_KIND[suite]
    max_chars = 900 if suite == "quick" else 1600
    tasks: list[Task] = []
    for topic, instruction in GROUNDED[:per_kind]:
        tasks.append(Task(f"grounded-{topic}", "grounded", f"{instruction}\n\n{_section(topic, max_chars)}"))
    for topic, question, answer in DOCQA[:per_kind]:
        tasks.append(Task(f"docqa-{topic}", "docqa", question, answer))
    for topic, question, answer in DOCQA[:per_kind]:
        tasks.append(Task(f"docqa-rag-{topic}", "docqa-rag", question, answer))
    for dotted, instruction in CODE[:per_kind]:
        tasks.append(Task(f"code-{dotted}", "code", f"{instruction}\n\n```python\n{_code_source(dotted)}```"))
    for i, text in enumerate(OPEN[:per_kind]):
        tasks.append(Task(f"open-{i}", "open", text))
    return tasks + _chat_tasks(per_kind, max_chars)


def _chat_tasks(per_kind: int, max_chars: int) -> list[Task]:
    """The everyday kinds (chat_tasks.py): at most the 4 of each there are, in either suite."""
    tasks = [Task(f"chat-{i}", "chat", follow_up, earlier=((question, answer),))
             for i, (question, answer, follow_up) in enumerate(CHAT[:per_kind])]
    tasks += [Task(f"qa-{i}", "qa", text) for i, text in enumerate(QA[:per_kind])]
    tasks += [Task(f"translate-{i}", "translate", text) for i, text in enumerate(TRANSLATE[:per_kind])]
    tasks += [Task(f"math-{i}", "math", text) for i, text in enumerate(MATH[:per_kind])]
    tasks += [Task(f"summary-{topic}", "summary", f"Summarise this documentation in three sentences:\n\n"
                   f"{_section(topic, max_chars)}") for topic in SUMMARY_TOPICS[:per_kind]]
    return tasks
