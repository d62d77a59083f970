"""The binding templates (data only: `interp binding --help` lists them without loading torch).

    >>> TEMPLATES["foods"].group.format(key="Ann", answer="pie")
    'Ann loves pie'
"""

import re
from dataclasses import dataclass
from typing import Literal

_OBJECTS = ("apple", "pen", "book", "key", "coin", "ring", "cup", "hat", "shoe", "ball", "clock", "lamp",
            "doll", "fork", "watch", "map", "bell", "bag", "toy", "card")
_PEOPLE = ("Ann", "Pete", "Tom", "Mary", "John", "Kate", "Bob", "Sam", "Lucy", "Jack", "Emma", "Mike",
           "Sara", "Paul", "Jane", "Mark", "Anna", "Dan", "Nick", "Rose")
_THINGS = ("car", "house", "door", "chair", "table", "bike", "boat", "kite", "shirt", "dress", "wall",
           "fence", "bowl", "vase", "sofa", "bed", "desk", "coat", "cap", "box")


@dataclass(frozen=True)
class Template:
    """One binding task: what is bound to what, and how it is asked.

    `group`, `question` and `answer` are format strings over `{key}` / `{answer}`; `answer` is the
    lead-in the model continues with the answer token (e.g. "The apple is in box" -> " A").
    """

    name: str
    keys: tuple[str, ...]
    answers: tuple[str, ...]
    group: str
    question: str
    answer: str

    @property
    def max_groups(self) -> int:
        return min(len(self.keys), len(self.answers))


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("boxes", _OBJECTS, tuple("ABCDEFGHIJKLMNOPQRST"),
                 "the {key} is in box {answer}", "Which box is the {key} in?", "The {key} is in box"),
        Template("foods", _PEOPLE,
                 ("pie", "jam", "cake", "bread", "rice", "soup", "fish", "cheese", "pasta", "salad", "honey",
                  "milk", "tea", "corn", "beans", "eggs", "pizza", "steak", "candy", "nuts"),
                 "{key} loves {answer}", "What does {key} love?", "{key} loves"),
        Template("cities", _PEOPLE,
                 ("Paris", "London", "Rome", "Berlin", "Tokyo", "Madrid", "Cairo", "Moscow", "Dublin",
                  "Vienna", "Boston", "Chicago", "Delhi", "Sydney", "Lima", "Oslo", "Prague", "Athens",
                  "Seoul", "Toronto"),
                 "{key} lives in {answer}", "Where does {key} live?", "{key} lives in"),
        Template("colours", _THINGS,
                 ("red", "blue", "green", "yellow", "black", "white", "pink", "brown", "orange", "purple",
                  "gray", "gold", "silver", "violet", "tan", "navy", "beige", "cyan", "olive", "teal"),
                 "the {key} is {answer}", "What colour is the {key}?", "The {key} is"),
    )
}

FORMATS = ("plain", "chat")
Format = Literal["plain", "chat"]


def sentence(text: str) -> str:
    """`text` with its first letter capitalised."""
    return text[:1].upper() + text[1:]


def vocabulary() -> list[str]:
    """Every word and punctuation mark the plain-format templates can produce (for word-level tokenizers)."""
    words: set[str] = {"Question", "Answer", ":", ".", ",", "?"}
    for t in TEMPLATES.values():
        for text in (t.group, t.question, t.answer):
            words.update(re.findall(r"\w+|[^\w\s]", text.replace("{key}", "").replace("{answer}", "")))
        for w in t.keys + t.answers:
            words.update({w, sentence(w)})
        words.update(sentence(w) for w in re.findall(r"\w+", t.group + " " + t.answer))
    return sorted(words)


__all__ = ["FORMATS", "TEMPLATES", "Format", "Template", "sentence", "vocabulary"]
