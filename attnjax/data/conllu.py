"""CoNLL-U treebanks (Universal Dependencies) as ``Sentence`` records, and where each word
sits in the sentence's text.

The format (https://universaldependencies.org/format.html): one line per word with ten
tab-separated columns ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``, comment lines
``# key = value`` before each sentence (``# text = ...``, ``# sent_id = ...``), a blank line
after it. Multiword-token lines (``29-30  didn't``) give the surface form of several
syntactic words; empty nodes (``8.1``) belong to the enhanced graph only. ``Sentence`` keeps
the basic tree: the syntactic words, their tags, heads (1-based, 0 = root) and relations.

The project's copy of UD English EWT (v2.16, dev and test, CC BY-SA 4.0) lives in
``../shared/data/ud_english_ewt/`` beside the checkout, not in the repository::

    from attnjax.data import conllu
    dev = conllu.load_ud_ewt("dev")            # 2,001 sentences
    s = dev[1]
    s.words[1], s.heads[1], s.relation(1)      # ('Bush', 5, 'nsubj')
    conllu.word_spans(s)                       # character span of every word in s.text
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ud_english_ewt"
SPLITS = ("dev", "test")


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One sentence's basic dependency tree.

    Attributes:
      sent_id: the ``# sent_id`` comment ("" if absent).
      text: the ``# text`` comment, else the forms joined as ``SpaceAfter`` says.
      words: ``[W]`` the syntactic words' forms (word ``i`` has CoNLL-U ID ``i + 1``).
      upos, xpos: ``[W]`` universal and language-specific part-of-speech tags.
      heads: ``[W]`` the CoNLL-U ID of each word's head (0: the root).
      deprels: ``[W]`` the full relations, subtypes included (``"nmod:poss"``).
      tokens: the multiword tokens as ``(first, last, form)`` over word indices (0-based,
        inclusive): ``(28, 29, "didn't")`` for CoNLL-U ``29-30``.
      space_after: ``[W]`` False where MISC says ``SpaceAfter=No`` (for a multiword token,
        its last word carries the token's value).
      lemmas: ``[W]`` the lemmas.
      feats: ``[W]`` the morphological features as written (``"Number=Sing|Person=3"``,
        ``"_"`` for none); ``feature(i, "Number")`` reads one.
    """

    sent_id: str
    text: str
    words: tuple[str, ...]
    upos: tuple[str, ...]
    xpos: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    tokens: tuple[tuple[int, int, str], ...] = ()
    space_after: tuple[bool, ...] = ()
    lemmas: tuple[str, ...] = ()
    feats: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.words)

    def relation(self, i: int) -> str:
        """Word ``i``'s universal relation without its subtype (``"nmod:poss"`` -> ``"nmod"``)."""
        return self.deprels[i].split(":")[0]

    def feature(self, i: int, name: str) -> str | None:
        """Word ``i``'s value of feature ``name`` (``"Number"`` -> ``"Sing"``), None if unset."""
        for item in self.feats[i].split("|"):
            key, sep, value = item.partition("=")
            if sep and key == name:
                return value
        return None

    def head_index(self, i: int) -> int:
        """Word ``i``'s head as a 0-based word index, -1 for the root."""
        return self.heads[i] - 1

    def arcs(self) -> list[tuple[int, int, str]]:
        """``(dependent, head, relation)`` for every non-root word (0-based indices, the
        relation without subtype)."""
        return [(i, self.heads[i] - 1, self.relation(i)) for i in range(len(self))
                if self.heads[i] > 0]


def _misc_space_after(misc: str) -> bool:
    return "SpaceAfter=No" not in misc.split("|")


def parse(text: str, source: str = "<string>") -> list[Sentence]:
    """Every sentence of CoNLL-U ``text``.

    Raises:
      ValueError: a line without ten columns, word IDs that do not count 1, 2, ..., a head
        outside ``0..W`` or a multiword range outside the sentence (the message names
        ``source`` and the line).
    """
    sentences: list[Sentence] = []
    comments: dict[str, str] = {}
    rows: list[list[str]] = []
    ranges: list[tuple[int, int, str, str]] = []
    start_line = 0

    def where(line_no: int) -> str:
        return f"{source}:{line_no}"

    def flush(line_no: int) -> None:
        if not rows:
            comments.clear()
            ranges.clear()
            return
        count = len(rows)
        heads = []
        for k, row in enumerate(rows):
            if row[0] != str(k + 1):
                raise ValueError(f"{where(start_line)}: word IDs must count 1, 2, ...; found "
                                 f"{row[0]!r} at position {k + 1}")
            try:
                head = int(row[6])
            except ValueError:
                raise ValueError(f"{where(start_line)}: word {row[0]} has HEAD {row[6]!r}; "
                                 "expected an integer") from None
            if not 0 <= head <= count:
                raise ValueError(f"{where(start_line)}: word {row[0]} has HEAD {head}, "
                                 f"outside 0..{count}")
            heads.append(head)
        space = [_misc_space_after(row[9]) for row in rows]
        tokens = []
        for first, last, form, misc in ranges:
            if not 1 <= first < last <= count:
                raise ValueError(f"{where(start_line)}: multiword token {first}-{last} is "
                                 f"outside the sentence's {count} words")
            tokens.append((first - 1, last - 1, form))
            space[last - 1] = _misc_space_after(misc)
        text = comments.get("text")
        if text is None:
            text = "".join(row[1] + (" " if s else "")
                           for row, s in zip(rows, space, strict=True)).strip()
        sentences.append(Sentence(
            sent_id=comments.get("sent_id", ""), text=text,
            words=tuple(r[1] for r in rows), upos=tuple(r[3] for r in rows),
            xpos=tuple(r[4] for r in rows), heads=tuple(heads),
            deprels=tuple(r[7] for r in rows), tokens=tuple(tokens),
            space_after=tuple(space), lemmas=tuple(r[2] for r in rows),
            feats=tuple(r[5] for r in rows)))
        rows.clear()
        comments.clear()
        ranges.clear()

    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\n\r")
        if not line.strip():
            flush(line_no)
            continue
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep:
                comments[key.strip()] = value.strip()
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            raise ValueError(f"{where(line_no)}: expected 10 tab-separated columns, got "
                             f"{len(columns)}: {line[:80]!r}")
        if not rows and not ranges:
            start_line = line_no
        word_id = columns[0]
        if "." in word_id:  # an empty node of the enhanced graph
            continue
        if "-" in word_id:
            first, _, last = word_id.partition("-")
            ranges.append((int(first), int(last), columns[1], columns[9]))
            continue
        rows.append(columns)
    flush(len(text.splitlines()) + 1)
    return sentences


def read_conllu(path: str | Path) -> list[Sentence]:
    """Every sentence of the CoNLL-U file at ``path``.

    Raises:
      FileNotFoundError: the file is missing (the message names the path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL-U file not found at {path}")
    return parse(path.read_text(encoding="utf-8"), source=str(path))


def ud_ewt_path(split: str, root: str | Path | None = None) -> Path:
    """Where split ``"dev"`` or ``"test"`` of UD English EWT is (``root`` defaults to
    ``../shared/data/ud_english_ewt`` beside the checkout)."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    return Path(root or DEFAULT_DIR) / f"en_ewt-ud-{split}.conllu"


def load_ud_ewt(split: str, root: str | Path | None = None) -> list[Sentence]:
    """UD English EWT's ``split`` (``"dev"``: 2,001 sentences, ``"test"``: 2,077).

    Raises:
      FileNotFoundError: the file is missing; the message names the path and where the
        project keeps the treebank.
    """
    path = ud_ewt_path(split, root)
    if not path.is_file():
        raise FileNotFoundError(
            f"UD English EWT ({split}) not found at {path}: the project keeps the treebank in "
            "../shared/data/ud_english_ewt/ beside the checkout (not in the repository); "
            "pass its folder as `root` (or the experiment's --config.ud_path)")
    return read_conllu(path)


def word_spans(sentence: Sentence) -> list[tuple[int, int]] | None:
    """The character span ``[start, end)`` of every word in ``sentence.text``, or None when
    the forms cannot be found in order in the text.

    A multiword token's words split its span where their forms spell the token
    ("didn't" = "did" + "n't"); otherwise (None) the sentence cannot be read word by word.
    """
    text, cursor = sentence.text, 0
    spans: list[tuple[int, int] | None] = [None] * len(sentence)
    token_of = {t[0]: t for t in sentence.tokens}
    i = 0
    while i < len(sentence):
        first, last, form = token_of.get(i, (i, i, sentence.words[i]))
        start = _find(text, form, cursor)
        if start < 0:
            return None
        cursor = start + len(form)
        if first == last:
            spans[i] = (start, cursor)
        else:
            parts = sentence.words[first : last + 1]
            if "".join(parts).lower() != text[start:cursor].lower():
                return None
            offset = start
            for k, part in enumerate(parts):
                spans[first + k] = (offset, offset + len(part))
                offset += len(part)
        i = last + 1
    return spans  # type: ignore[return-value]


def _find(text: str, form: str, cursor: int) -> int:
    """The position of ``form`` at ``cursor`` after optional whitespace, else -1."""
    while cursor < len(text) and text[cursor].isspace():
        cursor += 1
    return cursor if text.startswith(form, cursor) else -1


def relation_counts(sentences: Iterable[Sentence]) -> dict[str, int]:
    """How often each relation (without subtype) labels an arc, most frequent first."""
    counts: dict[str, int] = {}
    for s in sentences:
        for _, _, rel in s.arcs():
            counts[rel] = counts.get(rel, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
