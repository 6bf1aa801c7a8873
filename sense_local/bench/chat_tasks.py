"""Everyday chat turns for the benchmark, prompts of our own (issue 31): where nothing is copied from
the prompt, the turns people have most.

Kinds:
  chat       a second turn of a conversation: an earlier question and answer (written here), then a
             follow-up about that answer
  qa         a short factual question
  translate  a paragraph to translate
  math       a word problem
  summary    a summary of a section of Python's reference docs (pydoc topics)

And the returning-user scenario (benchmarks/returning_user.py): 30 one-turn conversations of one
user in one domain (small Python scripts for files and text), run in order through one runtime.
"""
from __future__ import annotations

CHAT = [
    ("What is a Python virtual environment?",
     "A virtual environment is a self-contained directory with its own Python interpreter and installed "
     "packages. You create one with `python -m venv .venv`, activate it with `source .venv/bin/activate` "
     "(on Windows `.venv\\Scripts\\activate`), and then `pip install` puts packages inside it instead of "
     "into the system Python. This keeps each project's dependencies apart, so two projects can use "
     "different versions of the same library.",
     "Rewrite your answer as a numbered list of steps."),
    ("How do I read a CSV file in Python?",
     "Use the standard library's `csv` module:\n\n```python\nimport csv\n\nwith open(\"data.csv\", newline=\"\") "
     "as f:\n    reader = csv.DictReader(f)\n    for row in reader:\n        print(row[\"name\"], row[\"age\"])\n```"
     "\n\n`DictReader` uses the first line as column names, so each row is a dictionary. Use `csv.reader` "
     "instead if the file has no header line.",
     "Change the example to skip rows whose age is empty, and explain the change."),
    ("Why is my recursive function slow?",
     "A recursive function is often slow because it solves the same subproblem many times. The classic "
     "example is a naive Fibonacci function: `fib(30)` calls `fib(28)` twice, `fib(27)` three times, and so "
     "on, so the number of calls grows exponentially. The fix is to remember results you have already "
     "computed, for example with `functools.lru_cache`, or to rewrite the function as a loop.",
     "Show the Fibonacci example with lru_cache."),
    ("What does the `with` statement do in Python?",
     "The `with` statement runs a block of code inside a context manager. The manager's `__enter__` method "
     "runs before the block and its `__exit__` method runs after it, even if the block raises an "
     "exception. The most common use is opening files: `with open(path) as f:` closes the file "
     "automatically when the block ends.",
     "Now explain it for someone who has never programmed, in three sentences."),
]

QA = [
    "What is the difference between a list and a tuple in Python?",
    "What does HTTP status code 404 mean?",
    "How many bytes are in a kilobyte?",
    "What is the time complexity of binary search?",
]

TRANSLATE = [
    "Translate into French: The meeting has been moved to Thursday afternoon because the projector in the "
    "main room is broken. Please bring your laptops and the printed agenda.",
    "Translate into German: Our new app helps you track your daily water intake. It sends a gentle "
    "reminder every two hours and shows your progress in a simple chart.",
    "Translate into Spanish: The library will be closed for renovation from the first to the fifteenth of "
    "March. Books can still be returned through the slot next to the main entrance.",
    "Translate into Italian: Thank you for your order. Your package was shipped this morning and should "
    "arrive within three to five working days.",
]

MATH = [
    "A shop sells pencils at 3 for $1.20. How much do 15 pencils cost? Explain step by step.",
    "A train leaves at 9:40 and arrives at 13:15. How long is the journey in minutes? Show your work.",
    "Anna has twice as many apples as Ben, and together they have 27. How many apples does each have? "
    "Solve it step by step.",
    "A rectangle is 12 cm long and its perimeter is 40 cm. What is its area? Explain each step.",
]

SUMMARY_TOPICS = ["assert", "while", "try", "import"]  # pydoc topics summarised in three sentences

# The returning user: one person's questions over some weeks, in one domain, each a new conversation.
RETURNING_USER = [
    "Write a Python function that counts the lines in a text file.",
    "Write a Python function that returns the largest file in a folder.",
    "How do I list all .txt files in a folder and its subfolders with pathlib?",
    "Write a Python function that reads a text file and returns its ten most common words.",
    "Write a Python script that renames every .jpeg file in a folder to .jpg.",
    "How do I read a JSON file into a dictionary in Python?",
    "Write a Python function that removes blank lines from a text file.",
    "Write a Python function that returns the total size of all files in a folder.",
    "How do I write a list of dictionaries to a CSV file in Python?",
    "Write a Python function that finds every line containing a given word in a text file.",
    "Write a Python script that copies all .py files from one folder to another.",
    "How do I check whether a file exists before opening it in Python?",
    "Write a Python function that counts the words in every .txt file in a folder.",
    "Write a Python function that replaces a word in a text file and saves the result.",
    "How do I read a file line by line without loading it all into memory in Python?",
    "Write a Python function that returns the newest file in a folder.",
    "Write a Python script that deletes all empty files in a folder.",
    "How do I write a dictionary to a JSON file with indentation in Python?",
    "Write a Python function that merges several text files into one.",
    "Write a Python function that counts how often each file extension occurs in a folder.",
    "Write a Python function that returns the longest line in a text file.",
    "Write a Python script that moves all .log files older than seven days to an archive folder.",
    "How do I read a CSV file and sum one of its columns in Python?",
    "Write a Python function that counts the characters in a text file, excluding spaces.",
    "Write a Python function that lists the files in a folder sorted by size.",
    "Write a Python function that splits a large text file into files of 1000 lines each.",
    "How do I append a line to an existing text file in Python?",
    "Write a Python function that finds duplicate files in a folder by comparing their contents.",
    "Write a Python script that converts every .txt file in a folder to upper case.",
    "Write a Python function that returns the number of unique words in a text file.",
]
