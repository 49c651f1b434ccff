"""SCAN: commands in a tiny navigation language and the action sequences they denote.

Lake & Baroni 2018, "Generalization without systematicity: On the compositional skills of
sequence-to-sequence recurrent networks", ICML (arXiv:1711.00350). The official files
(BSD licence, github.com/brendenlake/SCAN) are read from disk, never copied into the repo:
``<repo root>/../shared/data/scan`` by default, ``$ATTNJAX_SCAN_DIR`` or an explicit
``data_dir`` otherwise.

Besides loading, this module regenerates the data from the paper's grammar, and recomputes
the rule-based splits, so that tests can check the files against the rules:

* ``generate_scan()`` equals ``tasks.txt`` as a set of pairs (20,910, no duplicates on either
  side). Only the set: the official file is in a random order that cannot be derived (each
  official split file is independently shuffled too).
* ``length_split`` equals ``length_split/tasks_{train,test}_length.txt`` as sets.
* ``add_primitive_split`` equals ``add_prim_split/tasks_{train,test}_addprim_*.txt`` as
  multisets (the train files repeat the bare primitive command; see its docstring).
* The "simple" split is a random 80/20 split; it can only be loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import product
from pathlib import Path

Pair = tuple[tuple[str, ...], tuple[str, ...]]

SCAN_DIR_ENV = "ATTNJAX_SCAN_DIR"
# parents[2] of attnjax/data/scan.py is the repo root; the shared data sits beside it.
DEFAULT_SCAN_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scan"

SPLIT_FILES = {
    ("simple", "train"): "simple_split/tasks_train_simple.txt",
    ("simple", "test"): "simple_split/tasks_test_simple.txt",
    ("length", "train"): "length_split/tasks_train_length.txt",
    ("length", "test"): "length_split/tasks_test_length.txt",
    ("addprim_jump", "train"): "add_prim_split/tasks_train_addprim_jump.txt",
    ("addprim_jump", "test"): "add_prim_split/tasks_test_addprim_jump.txt",
    ("addprim_turn_left", "train"): "add_prim_split/tasks_train_addprim_turn_left.txt",
    ("addprim_turn_left", "test"): "add_prim_split/tasks_test_addprim_turn_left.txt",
}
SPLIT_NAMES = ("simple", "length", "addprim_jump", "addprim_turn_left")

# The phrase-structure grammar of Lake & Baroni 2018 (supplementary material):
#   C -> S and S | S after S | S
#   S -> V twice | V thrice | V
#   V -> D[1] opposite D[2] | D[1] around D[2] | D | U
#   D -> U left | U right | turn left | turn right
#   U -> walk | look | run | jump
PRIMITIVES = ("walk", "look", "run", "jump")
DIRECTIONS = ("left", "right")
ACTIONS = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
TURNS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
REPEATS = {"twice": 2, "thrice": 3}
CONJUNCTIONS = ("and", "after")


# ---------------------------------------------------------------------------------------------
# Files


def scan_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding the official SCAN files.

    Looks at ``data_dir`` if given, else ``$ATTNJAX_SCAN_DIR`` if set, else
    ``<repo root>/../shared/data/scan``; raises FileNotFoundError naming the place it looked.
    """
    if data_dir is not None:
        path, source = Path(data_dir), "the `data_dir` argument"
    elif os.environ.get(SCAN_DIR_ENV):
        path, source = Path(os.environ[SCAN_DIR_ENV]), f"${SCAN_DIR_ENV}"
    else:
        path, source = DEFAULT_SCAN_DIR, "the default <repo root>/../shared/data/scan"
    if not path.is_dir():
        raise FileNotFoundError(
            f"SCAN data directory not found: looked in {path.resolve()} (from {source}). "
            f"Pass `data_dir` or set ${SCAN_DIR_ENV} to the folder with tasks.txt and the "
            "*_split/ folders of github.com/brendenlake/SCAN."
        )
    return path.resolve()


def _parse_line(line: str) -> tuple[Pair | None, str]:
    """``(pair, "")`` for a well-formed ``IN: ... OUT: ...`` line, else ``(None, reason)``."""
    words = line.split()
    if not words:
        return None, "empty line"
    if words[0] != "IN:":
        return None, "line must start with 'IN:'"
    if words.count("OUT:") != 1 or words.count("IN:") != 1:
        return None, "expected one 'IN:' and one 'OUT:' marker, in that order"
    k = words.index("OUT:")
    command, actions = tuple(words[1:k]), tuple(words[k + 1 :])
    if not command:
        return None, "empty command between 'IN:' and 'OUT:'"
    if not actions:
        return None, "empty action sequence after 'OUT:'"
    return (command, actions), ""


def load_scan(path: str | os.PathLike) -> list[Pair]:
    """Parse a file in the official format, one ``IN: <command> OUT: <actions>`` per line.

    Args:
      path: e.g. ``scan_dir() / "tasks.txt"``.

    Returns:
      ``[(command_words, action_words), ...]`` in file order, e.g.
      ``(("jump", "twice"), ("I_JUMP", "I_JUMP"))``.

    Raises:
      ValueError: naming the file, the 1-based line number and what is wrong with the line.
    """
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            pair, reason = _parse_line(line.rstrip("\r\n"))
            if pair is None:
                raise ValueError(f"{path}:{line_number}: malformed SCAN line ({reason}): {line!r}")
            pairs.append(pair)
    return pairs


def load_tasks(data_dir: str | os.PathLike | None = None) -> list[Pair]:
    """All 20,910 official pairs (``tasks.txt``), in the file's (random) order."""
    return load_scan(scan_dir(data_dir) / "tasks.txt")


def load_split(name: str, part: str, data_dir: str | os.PathLike | None = None) -> list[Pair]:
    """One half of an official split, in file order.

    Args:
      name: one of ``"simple"``, ``"length"``, ``"addprim_jump"``, ``"addprim_turn_left"``.
      part: ``"train"`` or ``"test"``.
      data_dir: see ``scan_dir``.
    """
    if name not in SPLIT_NAMES:
        raise ValueError(f"load_split: `name` must be one of {SPLIT_NAMES}, got {name!r}")
    if part not in ("train", "test"):
        raise ValueError(f"load_split: `part` must be 'train' or 'test', got {part!r}")
    return load_scan(scan_dir(data_dir) / SPLIT_FILES[name, part])


# ---------------------------------------------------------------------------------------------
# Interpretation and generation


def _words(command: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(command.split()) if isinstance(command, str) else tuple(command)


def _interpret_verb_phrase(words: tuple[str, ...], command: tuple[str, ...]) -> tuple[str, ...]:
    """``[[V]]`` for ``V -> U | D | D[1] opposite D[2] | D[1] around D[2]``."""

    def fail(why: str):
        return ValueError(f"interpret: {' '.join(command)!r} is not a SCAN command: {why}")

    if not words:
        raise fail("empty phrase")
    head, rest = words[0], words[1:]
    if head not in ACTIONS and head != "turn":
        raise fail(f"a phrase must start with one of {PRIMITIVES + ('turn',)}, got {head!r}")
    # "turn" only exists with a direction: [[turn left]] = LTURN, with no action of its own.
    action = (ACTIONS[head],) if head in ACTIONS else ()
    if not rest:
        if head == "turn":
            raise fail("'turn' needs a direction ('turn left', 'turn right')")
        return action
    *modifier, direction = rest
    if direction not in TURNS:
        raise fail(f"expected a direction {DIRECTIONS} after {head!r}, got {direction!r}")
    turn = (TURNS[direction],)
    if not modifier:
        return turn + action  # [[x left]] = LTURN [[x]]
    if modifier == ["opposite"]:
        return turn + turn + action  # turn around to face the opposite way, then act
    if modifier == ["around"]:
        return (turn + action) * 4  # a full circle, acting after each quarter turn
    raise fail(f"expected 'opposite' or 'around' before {direction!r}, got {' '.join(modifier)!r}")


def _interpret_sentence(words: tuple[str, ...], command: tuple[str, ...]) -> tuple[str, ...]:
    """``[[S]]`` for ``S -> V twice | V thrice | V``."""
    if words and words[-1] in REPEATS:
        return _interpret_verb_phrase(words[:-1], command) * REPEATS[words[-1]]
    return _interpret_verb_phrase(words, command)


def interpret(command: str | Sequence[str]) -> tuple[str, ...]:
    """The action sequence a SCAN command denotes (Lake & Baroni 2018, supplementary).

    ``[[x1 and x2]] = [[x1]] [[x2]]``, ``[[x1 after x2]] = [[x2]] [[x1]]``, ``[[x twice]] =
    [[x]] [[x]]``, ``[[u left]] = LTURN [[u]]``, ``[[u opposite left]] = LTURN LTURN [[u]]``,
    ``[[u around left]] = (LTURN [[u]]) x 4``, ``[[turn left]] = LTURN`` (and ``right``).

    Args:
      command: ``"jump opposite left after walk twice"`` or its tuple of words.

    Returns:
      e.g. ``("I_WALK", "I_WALK", "I_TURN_LEFT", "I_TURN_LEFT", "I_JUMP")``.

    Raises:
      ValueError: if the command is not generated by the grammar, saying why.
    """
    words = _words(command)
    if any(not isinstance(word, str) for word in words):
        raise ValueError(
            f"interpret: `command` must be a str or a sequence of str, got {command!r}"
        )
    positions = [i for i, word in enumerate(words) if word in CONJUNCTIONS]
    if len(positions) > 1:
        raise ValueError(
            f"interpret: {' '.join(words)!r} is not a SCAN command: at most one of "
            f"{CONJUNCTIONS} is allowed, got {len(positions)}"
        )
    if not positions:
        return _interpret_sentence(words, words)
    i = positions[0]
    first = _interpret_sentence(words[:i], words)
    second = _interpret_sentence(words[i + 1 :], words)
    return first + second if words[i] == "and" else second + first


def _verb_phrases() -> list[tuple[str, ...]]:
    """All 34 ``V`` phrases: 4 ``U``, 10 ``D``, 10 ``... opposite ...``, 10 ``... around ...``."""
    directed = [(x, d) for x in PRIMITIVES + ("turn",) for d in DIRECTIONS]
    return (
        [(u,) for u in PRIMITIVES]
        + directed
        + [(x, "opposite", d) for x, d in directed]
        + [(x, "around", d) for x, d in directed]
    )


def generate_commands() -> list[tuple[str, ...]]:
    """Every command of the grammar, each once: 102 sentences + 2 * 102 * 102 conjunctions.

    Order: the single sentences, then ``S and S``, then ``S after S``, each in the order of
    the grammar's rules (``V``, ``V twice``, ``V thrice`` for every ``V``).
    """
    sentences = [v + repeat for v in _verb_phrases() for repeat in ((), ("twice",), ("thrice",))]
    conjoined = [
        left + (conjunction,) + right
        for conjunction in CONJUNCTIONS
        for left, right in product(sentences, sentences)
    ]
    return sentences + conjoined


def generate_scan() -> list[Pair]:
    """All 20,910 SCAN pairs, ``(command_words, interpret(command))``, from the grammar.

    Equals the official ``tasks.txt`` as a set (and neither has duplicates). The official
    line order is a random permutation that cannot be reproduced; the order here is the one
    of ``generate_commands``.
    """
    return [(command, interpret(command)) for command in generate_commands()]


# ---------------------------------------------------------------------------------------------
# Rule-based splits


def length_split(
    pairs: Sequence[Pair], max_train_actions: int = 22
) -> tuple[list[Pair], list[Pair]]:
    """Lake & Baroni 2018, Experiment 2: train on short action sequences, test on long ones.

    Train gets the pairs whose action sequence has at most ``max_train_actions`` actions, test
    the rest, each in input order. On ``generate_scan()`` this equals the official
    ``length_split`` files as sets: 16,990 train (1..22 actions) and 3,920 test (24..48
    actions; no command has exactly 23).
    """
    train = [pair for pair in pairs if len(pair[1]) <= max_train_actions]
    test = [pair for pair in pairs if len(pair[1]) > max_train_actions]
    return train, test


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))


def add_primitive_split(
    pairs: Sequence[Pair], primitive: str = "jump", primitive_fraction: float = 0.1
) -> tuple[list[Pair], list[Pair]]:
    """Lake & Baroni 2018, Experiment 3: a primitive seen only in isolation during training.

    Test: every command that contains the primitive's words as a contiguous phrase, except
    the bare primitive command itself. For ``"turn_left"`` the phrase is ``turn left``, so
    ``turn opposite left`` and ``turn around left`` stay in training (as in the official
    files). Train: all other commands, in input order, followed by the bare primitive command
    repeated ``k = round(n_other * f / (1 - f))`` times (``f = primitive_fraction``; at least
    once), the count that makes the primitive a fraction ``f`` of the training set (the
    official README: "over-represented to consist of 10% of the samples"). For both official
    primitives ``n_other`` is divisible by 9, so ``f = 0.1`` holds exactly: ``k = n_other / 9``.

    On ``generate_scan()`` this equals the official files as multisets: ``jump``: train
    13,203 + 1,467 x ``jump`` = 14,670 (1,467 / 14,670 = 10%), test 7,706; ``turn_left``:
    train 19,701 + 2,189 x ``turn left`` = 21,890, test 1,208. The official train files
    scatter the repeats at random positions; shuffle (e.g. ``batches(..., rng=...)``) to
    get the same effect.

    Args:
      pairs: e.g. ``generate_scan()``; must contain the bare primitive command.
      primitive: ``"jump"``, ``"turn_left"``, or any of ``walk``/``look``/``run``/
        ``turn_right``: the command, with ``_`` for spaces.
      primitive_fraction: f in [0, 1), the primitive's share of the training set.
    """
    phrase = tuple(primitive.split("_"))
    valid = PRIMITIVES + tuple(f"turn_{d}" for d in DIRECTIONS)
    if primitive not in valid:
        raise ValueError(
            f"add_primitive_split: `primitive` must be one of {valid}, got {primitive!r}"
        )
    if not 0 <= primitive_fraction < 1:
        raise ValueError(
            f"add_primitive_split: `primitive_fraction` must be in [0, 1), got {primitive_fraction}"
        )
    bare = [pair for pair in pairs if pair[0] == phrase]
    if not bare:
        raise ValueError(
            f"add_primitive_split: `pairs` has no bare {' '.join(phrase)!r} command to train on"
        )
    others = [pair for pair in pairs if not _contains(pair[0], phrase)]
    test = [pair for pair in pairs if _contains(pair[0], phrase) and pair[0] != phrase]
    repeats = round(len(others) * primitive_fraction / (1 - primitive_fraction))
    # Keep at least one copy: with f tiny the primitive would otherwise vanish from training.
    repeats = max(repeats, 1)
    return others + [bare[0]] * repeats, test
