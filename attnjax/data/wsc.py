"""The Winograd Schema Challenge collection (Levesque, Davis & Morgenstern 2012) as
``attnjax.data.english.WinogradPair`` twins.

The collection (``WSCollection.xml``, 285 schemas, CC BY 4.0) is not shipped with attnjax;
the project keeps it in ``../shared/data/wsc/`` beside the checkout (its README says how to
cite it). Each ``<schema>`` is ``txt1 pron txt2`` with two answer phrases and the correct
one; consecutive schemas with the same answer phrases and opposite answers are the twins
of one Winograd schema ("... because it was too big / too small").

A twin pair is kept when both sentences name both candidates verbatim (a leading "the",
"a" or "an" dropped: "the brown suitcase" is matched as "brown suitcase") and the marked
pronoun is the last occurrence of its word in each sentence, which is how
``WinogradPair`` locates it. ``load_pairs`` returns the kept pairs and what was dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from attnjax.data.english import WinogradPair

DEFAULT_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wsc" \
    / "WSCollection.xml"
WSC273 = 273  # the classic test set: the first 273 schemas of the collection
_DETERMINERS = ("the ", "a ", "an ")


def _text(element) -> str:
    return " ".join((element.text or "").split()) if element is not None else ""


def _candidate(phrase: str) -> str:
    lowered = phrase.lower()
    for determiner in _DETERMINERS:
        if lowered.startswith(determiner):
            return phrase[len(determiner):]
    return phrase


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _contains(text: str, phrase: str) -> bool:
    target, words = _words(phrase), _words(text)
    return bool(target) and any(words[i : i + len(target)] == target
                                for i in range(len(words) - len(target) + 1))


def read_schemas(path: str | Path | None = None) -> list[dict]:
    """Every schema of the XML: ``{"txt1", "pronoun", "txt2", "answers", "correct"}``
    (``correct`` 0 for answer A, 1 for B).

    Raises:
      FileNotFoundError: the file is missing (the message names the path and where the
        project keeps it).
    """
    path = Path(path) if path else DEFAULT_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"WSC collection not found at {path}: the project keeps WSCollection.xml in "
            "../shared/data/wsc/ beside the checkout (not in the repository); pass its path")
    root = ET.fromstring(path.read_bytes())  # the XML declares ISO-8859-1
    schemas = []
    for schema in root.iter("schema"):
        text = schema.find("text")
        answers = [_text(a) for a in schema.find("answers").findall("answer")]
        correct = _text(schema.find("correctAnswer")).strip(". ").upper()
        if len(answers) != 2 or correct not in ("A", "B"):
            raise ValueError(f"{path}: a schema with answers {answers} and correct "
                             f"answer {correct!r}; expected two answers and A or B")
        schemas.append({"txt1": _text(text.find("txt1")), "pronoun": _text(text.find("pron")),
                        "txt2": _text(text.find("txt2")), "answers": answers,
                        "correct": "AB".index(correct)})
    return schemas


def load_pairs(path: str | Path | None = None, num_schemas: int | None = None
               ) -> tuple[list[WinogradPair], dict]:
    """The twin pairs of the collection as ``WinogradPair``s, and ``{"schemas": n,
    "dropped": {reason: count}}`` for the schemas not used.

    ``num_schemas`` keeps the first schemas only (``WSC273``: the classic test set)."""
    schemas = read_schemas(path)[:num_schemas]
    pairs, dropped = [], {"not a twin pair": 0, "candidate not in the text": 0,
                          "pronoun repeated after its position": 0}
    i = 0
    while i < len(schemas):
        first = schemas[i]
        second = schemas[i + 1] if i + 1 < len(schemas) else None
        if (second is None or [a.lower() for a in first["answers"]]
                != [a.lower() for a in second["answers"]]
                or first["correct"] == second["correct"]
                or first["pronoun"].lower() != second["pronoun"].lower()):
            dropped["not a twin pair"] += 1
            i += 1
            continue
        i += 2
        sentences = tuple(f"{s['txt1']} {s['pronoun']} {s['txt2']}" for s in (first, second))
        candidates = tuple(_candidate(a) for a in first["answers"])
        pronoun = first["pronoun"].lower()
        if not all(_contains(s, c) for s in sentences for c in candidates):
            dropped["candidate not in the text"] += 2
            continue
        # Split at apostrophes too: "it's" holds a later "it" for a word-piece tokenizer.
        if any(pronoun in re.findall(r"[a-z0-9]+", s["txt2"].lower()) for s in (first, second)):
            dropped["pronoun repeated after its position"] += 2
            continue
        pairs.append(WinogradPair(sentences, candidates, pronoun,
                                  (first["correct"], second["correct"])))
    return pairs, {"schemas": len(schemas), "dropped": dropped}
