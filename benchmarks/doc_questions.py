"""Questions over Python's reference documentation (`pydoc_data.topics`), for grounded chat.

Each question is labelled with the topic whose text answers it and, where one exists, a short string
the answer should contain. Questions are phrased the way a user would ask, not copied from the docs.
The corpus leaves out topics that merely repeat others ("compound" holds if/while/for/try/with,
"else" duplicates "if", "specialnames" holds the customization/attribute-access/... topics), so
that each question has one right document.
"""
from __future__ import annotations

from dataclasses import dataclass

SUPERSET_TOPICS = ("compound", "else", "specialnames")


@dataclass(frozen=True)
class DocQuestion:
    topic: str  # the pydoc topic that answers it
    question: str
    answer: str | None = None  # a string a correct answer contains (checked against the topic text)


QUESTIONS = [
    DocQuestion("assert", "What exception does an assert statement raise when its condition is false?", "AssertionError"),
    DocQuestion("assignment", "How does assignment to a target list with a starred target work?", "starred"),
    DocQuestion("async", "How do I define a coroutine function with async def?", "async def"),
    DocQuestion("attribute-access", "When is __getattr__ called, compared with __getattribute__?", "__getattribute__"),
    DocQuestion("augassign", "How does an augmented assignment like x += 1 differ from x = x + 1?", "evaluated once"),
    DocQuestion("await", "What does an await expression do to a coroutine?", "Suspend"),
    DocQuestion("binary", "What does the // floor division operator return?", "floor"),
    DocQuestion("bitwise", "What does the ^ operator compute on integers?", "XOR"),
    DocQuestion("booleans", "What does the expression x or y return?", "x"),
    DocQuestion("break", "What does break do inside a loop?", "terminates"),
    DocQuestion("calls", "How are keyword arguments matched to parameters in a function call?", "keyword"),
    DocQuestion("class", "What happens when a class definition is executed?", "class"),
    DocQuestion("comparisons", "How does Python evaluate chained comparisons like a < b < c?", "and"),
    DocQuestion("context-managers", "What do the __enter__ and __exit__ methods of a context manager do?", "__exit__"),
    DocQuestion("continue", "What does continue do in a for loop?", "next cycle"),
    DocQuestion("customization", "What is the difference between __repr__ and __str__?", "__repr__"),
    DocQuestion("debugger", "How do I set a breakpoint in the pdb debugger?", "break"),
    DocQuestion("del", "What does the del statement do to a name?", "binding"),
    DocQuestion("dict", "How do I write a dictionary comprehension?", "comprehension"),
    DocQuestion("exceptions", "What happens when an exception is not handled at all?", "terminates"),
    DocQuestion("execmodel", "What is a code block in Python's execution model?", "block"),
    DocQuestion("floating", "How are floating point literals with an exponent written?", "exponent"),
    DocQuestion("for", "Is the else clause of a for loop executed after a break?", "else"),
    DocQuestion("formatstrings", "How do I align text to the right in a format specification?", "align"),
    DocQuestion("function", "When are default parameter values evaluated in a function definition?", "evaluated"),
    DocQuestion("global", "What does the global statement declare?", "global"),
    DocQuestion("identifiers", "Which words are reserved as keywords in Python?", "keywords"),
    DocQuestion("import", "How does a relative import with leading dots find the module?", "package"),
    DocQuestion("in", "How does the in operator test membership?", "in"),
    DocQuestion("integers", "How do I write a hexadecimal or binary integer literal?", "0x"),
    DocQuestion("lambda", "What kind of function does a lambda expression create?", "anonymous"),
    DocQuestion("naming", "How are names bound and resolved in nested scopes?", "scope"),
    DocQuestion("nonlocal", "What does the nonlocal statement do?", "enclosing"),
    DocQuestion("objects", "What are the identity, type and value of an object?", "identity"),
    DocQuestion("operator-summary", "What is the operator precedence in Python, from lowest to highest?", "precedence"),
    DocQuestion("pass", "What is the pass statement used for?", "null operation"),
    DocQuestion("power", "Which binds more tightly, the power operator or a unary minus on its left?", "unary"),
    DocQuestion("raise", "How do I chain exceptions with raise ... from?", "__cause__"),
    DocQuestion("return", "What does a return statement do inside a generator?", "StopIteration"),
    DocQuestion("slicings", "How does a slicing select a range of items from a sequence?", "slice"),
    DocQuestion("string-methods", "What does str.strip() remove from a string?", "characters"),
    DocQuestion("strings", "What is a raw string literal and how are backslashes treated in it?", "raw"),
    DocQuestion("truth", "Which objects are considered false in truth value testing?", "None"),
    DocQuestion("try", "When does the finally clause of a try statement run?", "finally"),
    DocQuestion("typesmapping", "What does dict.get() return when the key is missing?", "default"),
    DocQuestion("typesseq", "Which operations are supported by all sequence types like list, tuple and range?", "sequence"),
    DocQuestion("while", "When is the else clause of a while loop executed?", "false"),
    DocQuestion("with", "What methods are called when a with statement enters and leaves its block?", "__enter__"),
    DocQuestion("yield", "What does a yield statement do in a function body?", "generator"),
    DocQuestion("unary", "What does the ~ operator do to an integer?", "inversion"),
]


def corpus_topics() -> list[str]:
    """Every pydoc topic except the ones that only repeat others."""
    from pydoc_data.topics import topics

    return [t for t in sorted(topics) if t not in SUPERSET_TOPICS]


# Questions no Python reference topic answers (small talk, general knowledge, other software): grounded
# chat should answer them without citing the documents.
UNRELATED = [
    "Hello! How are you today?",
    "Name three colors.",
    "What is the capital of France?",
    "Tell me a joke.",
    "Who wrote Romeo and Juliet?",
    "What is 17 times 23?",
    "Recommend a good science fiction book.",
    "How do I bake sourdough bread?",
    "Translate 'good morning' into Spanish.",
    "How tall is Mount Everest?",
    "Write a haiku about autumn.",
    "What year did the Second World War end?",
    "How many legs does a spider have?",
    "What is photosynthesis?",
    "Suggest a name for my cat.",
    "How do I extract a .tar.gz archive?",
    "What is the boiling point of water at sea level?",
    "Who painted the Mona Lisa?",
    "Thanks, that helps!",
    "What should I cook for dinner tonight?",
    "How far is the Moon from Earth?",
    "Give me three tips for sleeping better.",
    "How do I change a flat tire on a bicycle?",
    "What is the difference between weather and climate?",
]


# Written after the gate's first rule was chosen on the sets above: questions a user might ask in
# their own words (some words the reference never uses), and more unrelated ones. The rule's later
# revision (README, "Grounding gate") looked at these too.
HELD_OUT = [
    DocQuestion("assert", "Can I turn off assertions when running my program?", "-O"),
    DocQuestion("lambda", "Can a lambda contain statements or only a single expression?", "expression"),
    DocQuestion("for", "How can I loop over the items of a list?", "for"),
    DocQuestion("import", "What happens the first time I import a module?", "module"),
    DocQuestion("exceptions", "How do I catch an error so my script keeps going?", "except"),
    DocQuestion("formatstrings", "How do I print a number with two decimal places?", "precision"),
    DocQuestion("integers", "Is there a limit to how big an int can be?", "unlimited"),
    DocQuestion("truth", "Is an empty list treated as false in an if test?", "empty"),
    DocQuestion("global", "Why can't my function change a variable defined at module level?", "global"),
    DocQuestion("yield", "How do generators produce values one at a time?", "yield"),
    DocQuestion("class", "How do I make a new class that inherits from another one?", "base"),
    DocQuestion("string-methods", "How can I split a sentence into words?", "split"),
    DocQuestion("typesmapping", "How do I loop over the keys and values of a dict?", "items"),
    DocQuestion("with", "Why should I open files using with?", "__exit__"),
    DocQuestion("comparisons", "What is the difference between == and is?", "identity"),
    DocQuestion("del", "How do I remove an item from a list by its index?", "del"),
    DocQuestion("slicings", "How do I get the last three elements of a list?", "slice"),
    DocQuestion("booleans", "Does and stop evaluating once the left side is false?", "false"),
    DocQuestion("pass", "What do I write in an empty function body?", "pass"),
    DocQuestion("debugger", "How do I step through my code line by line?", "step"),
]

UNRELATED_HELD_OUT = [
    "Good evening!",
    "Can you help me?",
    "What's the weather like today?",
    "Who is the president of the United States?",
    "How many continents are there?",
    "What is the speed of light?",
    "Explain quantum entanglement simply.",
    "Write a short poem about the sea.",
    "What are some good exercises for back pain?",
    "How do I make a cup of green tea?",
    "Which planet is the largest in our solar system?",
    "What does DNA stand for?",
    "Plan a weekend trip to Rome for me.",
    "How do I reset my wifi router?",
    "How do I undo the last commit in git?",
    "What is the best way to learn the guitar?",
    "Summarize the plot of Hamlet.",
    "What is the population of Tokyo?",
    "How many days are there in a leap year?",
    "Convert 100 Fahrenheit to Celsius.",
    "Why is the sky blue?",
    "What rhymes with orange?",
    "Recommend a movie for tonight.",
    "How do vaccines work?",
    "What's your name?",
    "Can you speak French?",
    "How do I center a div in CSS?",
    "What is the tallest animal?",
    "Tell me something interesting.",
    "Bye for now!",
]


# Written blind after the hidden-state part of the gate was chosen on the sets above (grounding/gate.py):
# more questions in users' own words, and unrelated ones made of words manuals and references use
# ("Name three animals.", "What is the first letter of the alphabet?"). Run once with the rule.
HELD_OUT_2 = [
    DocQuestion("break", "How do I stop a loop early when I find what I'm looking for?"),
    DocQuestion("continue", "How can I skip the rest of one loop iteration and go to the next?"),
    DocQuestion("raise", "How do I throw my own error with a message?"),
    DocQuestion("return", "What does a function give back if it has no return line?"),
    DocQuestion("nonlocal", "How can an inner function change a variable of the function around it?"),
    DocQuestion("while", "How do I keep repeating something until a condition becomes false?"),
    DocQuestion("dict", "Can I make a dictionary with a one-line comprehension?"),
    DocQuestion("lists", "How do I build a list of squares in one line?"),
    DocQuestion("floating", "How do I write a number in scientific notation like 1e10?"),
    DocQuestion("power", "Which operator raises a number to a power?"),
    DocQuestion("strings", "How do I write a string that spans several lines?"),
    DocQuestion("typesseq-mutable", "How do I add an item to the end of a list?"),
    DocQuestion("context-managers", "What methods does an object need to work in a with block?"),
    DocQuestion("if", "How do I check several conditions one after another?"),
    DocQuestion("try", "How do I run cleanup code whether or not an error happened?"),
    DocQuestion("calls", "How do I pass arguments to a function by name?"),
    DocQuestion("bitwise", "How do I combine two numbers bit by bit with and?"),
    DocQuestion("shifting", "What does shifting a number left by one bit do?"),
    DocQuestion("async", "How do I loop over an asynchronous iterator?"),
    DocQuestion("imaginary", "How do I write a complex number?"),
]
UNRELATED_HELD_OUT_2 = [
    "Name three animals.", "List three fruits.", "Name five countries in Europe.", "What colour is the sky?",
    "How many days are in a week?", "Give me a word that means happy.", "What is your favourite number?",
    "Count from one to ten.", "What time is it in London?", "Describe a sunset.",
    "What is the first letter of the alphabet?", "Write a sentence with the word blue.",
    "Which is bigger, an elephant or a mouse?", "Tell me a fun fact about cats.", "What is a good name for a dog?",
    "What sound does a cow make?", "Name a famous painter.", "What is the opposite of hot?",
    "How do I say thank you in German?", "What is the main ingredient of guacamole?",
    "Spell the word necessary.", "Who invented the telephone?", "What is the largest ocean?",
    "Give me two rhymes for cat.", "What should I name my new project?", "How do I tie a tie?",
    "What is the square root of 81?", "Which month comes after June?", "What are the three primary colours?",
    "Is a tomato a fruit?",
]
