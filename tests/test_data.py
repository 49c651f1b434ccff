"""attnjax.data: SCAN against the official files, vocabularies, batching, toy translation."""

import re
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnjax.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    ToyTranslation,
    Vocab,
    batches,
    bucket_by_length,
    encode_pairs,
    gold_alignment_matrix,
    scan,
    train_test_split,
    trim_padding,
)
from attnjax.data.toy_translation import ADJECTIVES, ARTICLES, NOUNS, VERBS

SCAN_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scan"
# The official files are part of the test fixture: missing data fails loudly, never skips.


@cache
def official(name: str, part: str | None = None) -> list:
    if name == "tasks":
        return scan.load_tasks(SCAN_DIR)
    return scan.load_split(name, part, data_dir=SCAN_DIR)


@cache
def generated() -> list:
    return scan.generate_scan()


# ---------------------------------------------------------------------------------------------
# SCAN: the generator and the rule-based splits against the official files


def test_generate_scan_equals_official_tasks_as_a_set_without_duplicates():
    ours, theirs = generated(), official("tasks")
    assert len(ours) == len(theirs) == 20_910
    assert len(set(ours)) == len(set(theirs)) == 20_910  # no duplicates on either side
    assert set(ours) == set(theirs)


def test_length_split_equals_official_files_as_sets():
    train, test = scan.length_split(generated())
    official_train, official_test = official("length", "train"), official("length", "test")
    assert (len(train), len(test)) == (len(official_train), len(official_test)) == (16_990, 3_920)
    # No duplicates anywhere, so set equality is multiset equality here.
    assert Counter(train) == Counter(official_train)
    assert Counter(test) == Counter(official_test)
    assert max(len(actions) for _, actions in official_train) == 22
    assert min(len(actions) for _, actions in official_test) == 24  # no command gives 23


@pytest.mark.parametrize(
    "primitive, name, n_other, n_repeats, n_test",
    [
        ("jump", "addprim_jump", 13_203, 1_467, 7_706),
        ("turn_left", "addprim_turn_left", 19_701, 2_189, 1_208),
    ],
)
def test_add_primitive_split_equals_official_files_as_multisets(
    primitive, name, n_other, n_repeats, n_test
):
    train, test = scan.add_primitive_split(generated(), primitive)
    official_train, official_test = official(name, "train"), official(name, "test")
    assert Counter(train) == Counter(official_train)
    assert Counter(test) == Counter(official_test) and len(test) == n_test
    bare = tuple(primitive.split("_"))
    counts = Counter(command for command, _ in official_train)
    assert counts[bare] == n_repeats and len(counts) == n_other + 1
    assert n_repeats * 10 == len(official_train)  # exactly 10% of training, = n_other / 9
    assert all(n == 1 for command, n in counts.items() if command != bare)


def test_official_simple_split_partitions_tasks():
    train, test = official("simple", "train"), official("simple", "test")
    assert (len(train), len(test)) == (16_728, 4_182)
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(official("tasks"))


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("walk OUT: I_WALK", "must start with 'IN:'"),
        ("IN: walk I_WALK", "one 'IN:' and one 'OUT:'"),
        ("IN: walk OUT: I_WALK OUT: I_WALK", "one 'IN:' and one 'OUT:'"),
        ("IN: OUT: I_WALK", "empty command"),
        ("IN: walk OUT:", "empty action sequence"),
        ("", "empty line"),
    ],
)
def test_load_scan_error_names_file_line_and_reason(tmp_path, bad_line, reason):
    path = tmp_path / "tasks.txt"
    path.write_text(f"IN: walk twice OUT: I_WALK I_WALK\n{bad_line}\nIN: run OUT: I_RUN\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2:") + ".*" + re.escape(reason)):
        scan.load_scan(path)


def test_load_scan_parses_official_format(tmp_path):
    path = tmp_path / "tasks.txt"
    path.write_text("IN: jump left OUT: I_TURN_LEFT I_JUMP\nIN: run OUT: I_RUN\n")
    assert scan.load_scan(path) == [
        (("jump", "left"), ("I_TURN_LEFT", "I_JUMP")),
        (("run",), ("I_RUN",)),
    ]


def test_scan_dir_missing_raises_saying_where_it_looked(tmp_path, monkeypatch):
    missing = tmp_path / "no_scan_here"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing.resolve())) + ".*data_dir"):
        scan.scan_dir(missing)
    monkeypatch.setenv(scan.SCAN_DIR_ENV, str(missing))
    with pytest.raises(
        FileNotFoundError, match=re.escape(str(missing.resolve())) + ".*ATTNJAX_SCAN_DIR"
    ):
        scan.load_tasks()


def test_scan_dir_default_is_beside_the_repo_root(monkeypatch):
    monkeypatch.delenv(scan.SCAN_DIR_ENV, raising=False)
    assert scan.scan_dir() == SCAN_DIR.resolve()


def test_scan_dir_env_var_overrides_default(tmp_path, monkeypatch):
    (tmp_path / "tasks.txt").write_text("IN: look OUT: I_LOOK\n")
    monkeypatch.setenv(scan.SCAN_DIR_ENV, str(tmp_path))
    assert scan.load_tasks() == [(("look",), ("I_LOOK",))]


def test_load_split_rejects_unknown_name_and_part():
    with pytest.raises(ValueError, match="`name` must be one of"):
        scan.load_split("template", "train")
    with pytest.raises(ValueError, match="`part` must be 'train' or 'test'"):
        scan.load_split("length", "dev")


# The README's table, checked by hand against the paper's interpretation rules.
README_EXAMPLES = [
    ("jump", "I_JUMP"),
    ("jump left", "I_TURN_LEFT I_JUMP"),
    (
        "jump around right",
        "I_TURN_RIGHT I_JUMP I_TURN_RIGHT I_JUMP I_TURN_RIGHT I_JUMP I_TURN_RIGHT I_JUMP",
    ),
    ("turn left twice", "I_TURN_LEFT I_TURN_LEFT"),
    ("jump thrice", "I_JUMP I_JUMP I_JUMP"),
    ("jump opposite left and walk thrice", "I_TURN_LEFT I_TURN_LEFT I_JUMP I_WALK I_WALK I_WALK"),
    (
        "jump opposite left after walk around left",
        "I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK "
        "I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK I_TURN_LEFT I_TURN_LEFT I_JUMP",
    ),
    ("turn opposite right", "I_TURN_RIGHT I_TURN_RIGHT"),
    ("turn around left", "I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT"),
]


@pytest.mark.parametrize("command, actions", README_EXAMPLES)
def test_interpret_readme_examples(command, actions):
    assert scan.interpret(command) == tuple(actions.split())
    assert scan.interpret(command.split()) == tuple(actions.split())


@pytest.mark.parametrize(
    "command, reason",
    [
        ("turn", "needs a direction"),
        ("walk walk", "expected a direction"),
        ("walk sideways", "expected a direction"),
        ("jump twice left", "expected 'opposite' or 'around' before 'left', got 'twice'"),
        ("walk and run and look", "at most one of"),
        ("walk upside left", "expected 'opposite' or 'around'"),
        ("left", "must start with one of"),
        ("walk and", "empty phrase"),
    ],
)
def test_interpret_rejects_ungrammatical_commands(command, reason):
    with pytest.raises(
        ValueError, match=re.escape(f"{command!r} is not a SCAN command") + ".*" + re.escape(reason)
    ):
        scan.interpret(command)


SENTENCES = [c for c in scan.generate_commands() if "and" not in c and "after" not in c]
VERB_PHRASES = [c for c in SENTENCES if c[-1] not in scan.REPEATS]


def test_grammar_sizes():
    assert len(VERB_PHRASES) == 34 and len(SENTENCES) == 102
    assert len(scan.generate_commands()) == 102 + 2 * 102 * 102


@given(st.sampled_from(VERB_PHRASES))
def test_interpret_twice_and_thrice_repeat(phrase):
    once = scan.interpret(phrase)
    assert scan.interpret(phrase + ("twice",)) == once * 2
    assert scan.interpret(phrase + ("thrice",)) == once * 3


@given(st.sampled_from(SENTENCES), st.sampled_from(SENTENCES))
def test_interpret_and_is_x_then_y_and_after_is_y_then_x(x, y):
    assert scan.interpret(x + ("and",) + y) == scan.interpret(x) + scan.interpret(y)
    assert scan.interpret(x + ("after",) + y) == scan.interpret(y) + scan.interpret(x)


@given(st.sampled_from(scan.PRIMITIVES), st.sampled_from(scan.DIRECTIONS))
def test_interpret_opposite_and_around_are_two_and_four_turns(primitive, direction):
    turn, act = scan.interpret(("turn", direction)), scan.interpret((primitive,))
    assert scan.interpret((primitive, "opposite", direction)) == turn * 2 + act
    assert scan.interpret((primitive, "around", direction)) == (turn + act) * 4


def test_length_and_add_primitive_split_partition_their_input():
    pairs = generated()
    train, test = scan.length_split(pairs)
    assert sorted(train + test) == sorted(pairs)
    train, test = scan.add_primitive_split(pairs, "jump")
    assert set(train) | set(test) == set(pairs) and not set(train) & set(test)
    with pytest.raises(ValueError, match="no bare 'jump' command"):
        scan.add_primitive_split([p for p in pairs if p[0] != ("jump",)], "jump")
    with pytest.raises(ValueError, match="`primitive` must be one of"):
        scan.add_primitive_split(pairs, "jump_left")


# ---------------------------------------------------------------------------------------------
# Vocabulary and encoding


def test_vocab_build_puts_specials_first_then_sorted_tokens():
    vocab = Vocab.build([("walk", "twice"), ("jump", "walk")])
    assert vocab.tokens == ("<pad>", "<bos>", "<eos>", "<unk>", "jump", "twice", "walk")
    assert len(vocab) == 7
    assert Vocab.build([("jump", "walk"), ("walk", "twice")]) == vocab  # order-independent


def test_vocab_encode_decode_round_trip_unknown_and_specials():
    vocab = Vocab.build([("walk", "twice"), ("jump",)])
    assert vocab.decode(vocab.encode(["jump", "twice"])) == ["jump", "twice"]
    assert vocab.encode(["fly"]) == [UNK_ID]
    ids = [BOS_ID, *vocab.encode(["walk", "twice"]), EOS_ID, *vocab.encode(["jump"]), PAD_ID]
    assert vocab.decode(ids) == ["walk", "twice"]  # stops at the first <eos>
    assert vocab.decode(np.array(ids)) == ["walk", "twice"]
    assert vocab.decode(ids, strip_special=False) == [
        "<bos>",
        "walk",
        "twice",
        "<eos>",
        "jump",
        "<pad>",
    ]
    assert vocab.decode([UNK_ID]) == ["<unk>"]


@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "walk", "I_JUMP", "é"]), max_size=6),
        min_size=1,
        max_size=5,
    )
)
def test_vocab_decode_inverts_encode(sequences):
    vocab = Vocab.build(sequences)
    for sequence in sequences:
        assert vocab.decode(vocab.encode(sequence)) == sequence


def test_vocab_json_and_file_round_trip(tmp_path):
    vocab = Vocab.build([("jump", "twice", "é")])
    assert Vocab.from_json(vocab.to_json()) == vocab
    vocab.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json") == vocab


def test_vocab_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`sequences\[0\]` must be a sequence of tokens"):
        Vocab.build(["walk twice"])
    with pytest.raises(ValueError, match="reserved special tokens"):
        Vocab.build([("walk", "<eos>")])
    vocab = Vocab.build([("walk",)])
    with pytest.raises(ValueError, match=r"`ids` must lie in \[0, 5\), got \[9\]"):
        vocab.decode([1, 9])
    with pytest.raises(ValueError, match="`tokens` must start with"):
        Vocab(["walk"])


def test_encode_pairs_shapes_padding_bos_eos():
    pairs = [(("walk", "twice"), ("W", "W")), (("jump",), ("J",))]
    source_vocab = Vocab.build(p[0] for p in pairs)  # jump=4 twice=5 walk=6
    target_vocab = Vocab.build(p[1] for p in pairs)  # J=4 W=5
    arrays = encode_pairs(pairs, source_vocab, target_vocab)
    np.testing.assert_array_equal(arrays["source"], [[6, 5, EOS_ID], [4, EOS_ID, PAD_ID]])
    np.testing.assert_array_equal(arrays["target_in"], [[BOS_ID, 5, 5], [BOS_ID, 4, PAD_ID]])
    np.testing.assert_array_equal(arrays["target_out"], [[5, 5, EOS_ID], [4, EOS_ID, PAD_ID]])
    assert all(a.dtype == np.int32 for a in arrays.values())
    wide = encode_pairs(pairs, source_vocab, target_vocab, max_source_len=5, max_target_len=4)
    assert wide["source"].shape == (2, 5) and wide["target_in"].shape == (2, 4)
    assert (wide["source"][:, 3:] == PAD_ID).all()


def test_encode_pairs_too_long_example_names_index_and_length():
    pairs = [(("a",), ("x",)), (("a", "b", "c"), ("x",))]
    vocab = Vocab.build([("a", "b", "c", "x")])
    too_long = r"example 1 has source length 3 .* = 4 > `max_source_len`=3"
    with pytest.raises(ValueError, match=too_long):
        encode_pairs(pairs, vocab, vocab, max_source_len=3)
    too_long = r"example 0 has target length 1 .* = 2 > `max_target_len`=1"
    with pytest.raises(ValueError, match=too_long):
        encode_pairs(pairs, vocab, vocab, max_target_len=1)
    with pytest.raises(ValueError, match="`pairs` is empty"):
        encode_pairs([], vocab, vocab)


def test_encode_pairs_on_scan_commands():
    pairs = scan.generate_scan()[::50]
    source_vocab = Vocab.build(c for c, _ in pairs)
    target_vocab = Vocab.build(a for _, a in pairs)
    arrays = encode_pairs(pairs, source_vocab, target_vocab)
    n = len(pairs)
    longest_source = max(len(c) for c, _ in pairs)
    longest_target = max(len(a) for _, a in pairs)
    assert arrays["source"].shape == (n, longest_source + 1)
    assert arrays["target_in"].shape == arrays["target_out"].shape == (n, longest_target + 1)
    for i, (command, actions) in enumerate(pairs):
        assert source_vocab.decode(arrays["source"][i]) == list(command)
        assert arrays["source"][i, len(command)] == EOS_ID
        assert target_vocab.decode(arrays["target_in"][i]) == list(actions)
        assert target_vocab.decode(arrays["target_out"][i]) == list(actions)
    # Teacher forcing: target_in is target_out shifted right by one, <bos> in front.
    assert (arrays["target_in"][:, 0] == BOS_ID).all()
    shifted = np.where(arrays["target_out"] == EOS_ID, PAD_ID, arrays["target_out"])
    np.testing.assert_array_equal(arrays["target_in"][:, 1:], shifted[:, :-1])


# ---------------------------------------------------------------------------------------------
# Batching


def toy_arrays(n: int, width: int = 6) -> dict:
    rng = np.random.default_rng(n)
    lengths = rng.integers(1, width + 1, size=n)
    source = np.where(np.arange(width)[None, :] < lengths[:, None], 7, PAD_ID).astype(np.int32)
    return {"source": source, "index": np.arange(n)}


@given(st.integers(1, 40), st.integers(1, 12), st.booleans(), st.booleans())
def test_batches_cover_every_example_once_per_epoch(n, batch_size, shuffle, drop_remainder):
    arrays = toy_arrays(n)
    rng = np.random.default_rng(0) if shuffle else None
    seen = [
        batch["index"]
        for batch in batches(arrays, batch_size, rng=rng, drop_remainder=drop_remainder)
    ]
    seen_all = np.concatenate(seen) if seen else np.array([], int)
    expected = n - n % batch_size if drop_remainder else n
    assert len(seen_all) == len(set(seen_all.tolist())) == expected
    assert all(len(b) == batch_size for b in seen[:-1])
    if drop_remainder:
        assert all(len(b) == batch_size for b in seen)
    if not shuffle:
        np.testing.assert_array_equal(seen_all, np.arange(expected))


def test_batches_deterministic_given_seed_and_slices_aligned():
    arrays = toy_arrays(23)
    first = list(batches(arrays, 5, rng=np.random.default_rng(7)))
    again = list(batches(arrays, 5, rng=np.random.default_rng(7)))
    other = list(batches(arrays, 5, rng=np.random.default_rng(8)))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
    assert any((a["index"] != b["index"]).any() for a, b in zip(first, other, strict=True))
    for batch in first:  # every array is sliced with the same indices
        np.testing.assert_array_equal(batch["source"], arrays["source"][batch["index"]])


def test_batches_reject_mismatched_arrays_and_bad_batch_size():
    with pytest.raises(ValueError, match=r"same leading dim N.*'a': \[3\], 'b': \[4\]"):
        next(batches({"a": np.zeros(3), "b": np.zeros(4)}, 2))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        next(batches({"a": np.zeros(3)}, 0))


@pytest.mark.parametrize("shuffle", [False, True])
def test_bucket_by_length_groups_lengths_trims_and_covers_once(shuffle):
    arrays = toy_arrays(50, width=20)
    lengths = (arrays["source"] != PAD_ID).sum(axis=1)
    rng = np.random.default_rng(1) if shuffle else None
    out = list(bucket_by_length(arrays, 8, rng=rng, pad_to_multiple=4))
    seen = np.concatenate([batch["index"] for batch in out])
    assert sorted(seen.tolist()) == list(range(50))
    spans = sorted((lengths[b["index"]].min(), lengths[b["index"]].max()) for b in out)
    for (_, high), (low, _) in zip(spans, spans[1:], strict=False):
        assert high <= low  # batches hold contiguous ranges of the sorted lengths
    for batch in out:
        longest = lengths[batch["index"]].max()
        assert batch["source"].shape[1] == min(20, -(-longest // 4) * 4)
        # Trimming drops only padding.
        np.testing.assert_array_equal(
            batch["source"], arrays["source"][batch["index"], : batch["source"].shape[1]]
        )


def test_bucket_by_length_is_deterministic_given_seed():
    arrays = toy_arrays(40, width=12)
    runs = [
        [b["index"] for b in bucket_by_length(arrays, 8, rng=np.random.default_rng(seed))]
        for seed in (5, 5, 6)
    ]
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(runs[0], runs[2], strict=True))


def test_bucket_by_length_without_trim_keeps_shapes():
    arrays = toy_arrays(20, width=9)
    for batch in bucket_by_length(arrays, 6, trim=False, rng=np.random.default_rng(0)):
        assert batch["source"].shape[1] == 9


def test_trim_padding_keeps_interior_padding_and_trims_each_array_independently():
    batch = {
        "source": np.array([[5, 0, 6, 0, 0], [5, 0, 0, 0, 0]]),
        "target_in": np.array([[1, 4, 0, 0], [1, 0, 0, 0]]),
    }
    trimmed = trim_padding(batch)
    np.testing.assert_array_equal(trimmed["source"], [[5, 0, 6], [5, 0, 0]])
    np.testing.assert_array_equal(trimmed["target_in"], [[1, 4], [1, 0]])
    assert trim_padding(batch, pad_to_multiple=4)["source"].shape == (2, 4)


# ---------------------------------------------------------------------------------------------
# Toy translation

NOUN_BY_FRENCH = {n.french: (n, False) for n in NOUNS} | {n.french_plural: (n, True) for n in NOUNS}
ADJECTIVE_FORMS = {a.form(g, p): a for a in ADJECTIVES for g in "mf" for p in (False, True)}
VERB_BY_FRENCH = {v.french: (v, False) for v in VERBS} | {v.french_plural: (v, True) for v in VERBS}


def sample(seed=0, n=200, **kwargs):
    return ToyTranslation(seed, **kwargs).sample(n)


def test_toy_translation_is_deterministic_given_seed():
    assert sample(3) == sample(3)
    assert sample(3) != sample(4)
    generator = ToyTranslation(3)
    assert generator.sample(5) + generator.sample(5) == sample(3, n=10)  # a stream


@pytest.mark.parametrize("negation_prob", [0.0, 0.5])
def test_alignment_indices_valid_and_every_target_word_aligned(negation_prob):
    for example in sample(negation_prob=negation_prob, relative_clause_prob=0.5):
        S, T = len(example.source), len(example.target)
        assert all(0 <= s < S and 0 <= t < T for s, t in example.alignment)
        assert {t for _, t in example.alignment} == set(range(T))
        assert {s for s, _ in example.alignment} == set(range(S))
        assert len(set(example.alignment)) == len(example.alignment)
        matrix = gold_alignment_matrix(example)
        assert matrix.shape == (T, S)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
        if negation_prob == 0.0:  # one-to-one: a permutation matrix
            assert S == T
            np.testing.assert_array_equal(matrix.sum(axis=0), 1.0)


def test_adjectives_follow_the_noun_in_mirror_order_so_alignment_crosses():
    crossing = 0
    for example in sample(max_adjectives=2):
        for s, t in example.alignment:
            if example.source[s] in {a.english for a in ADJECTIVES}:
                assert example.target[t] in ADJECTIVE_FORMS
                assert ADJECTIVE_FORMS[example.target[t]].english == example.source[s]
        crossing += any(
            s1 < s2 and t1 > t2 for s1, t1 in example.alignment for s2, t2 in example.alignment
        )
    assert crossing > 0
    english_adjectives = {a.english for a in ADJECTIVES}
    example = next(e for e in sample() if set(e.source[1:3]) <= english_adjectives)
    # the A1 A2 N -> art N A2' A1'
    assert ADJECTIVE_FORMS[example.target[2]].english == example.source[2]
    assert ADJECTIVE_FORMS[example.target[3]].english == example.source[1]


def test_articles_and_adjectives_agree_with_their_noun():
    for example in sample(relative_clause_prob=0.5, negation_prob=0.3):
        target = example.target
        for t, word in enumerate(target):
            if word in ("le", "la", "les"):
                noun, plural = NOUN_BY_FRENCH[target[t + 1]]  # the noun follows its article
                assert word == ARTICLES[noun.gender, plural]
            if word in ADJECTIVE_FORMS:  # adjectives follow their noun
                n = t - 1
                while target[n] in ADJECTIVE_FORMS:
                    n -= 1
                noun, plural = NOUN_BY_FRENCH[target[n]]
                assert word == ADJECTIVE_FORMS[word].form(noun.gender, plural)
        # The reported agreement controllers are nouns; every article and adjective has one.
        controllers = dict(example.agreement)
        assert all(target[c] in NOUN_BY_FRENCH for c in controllers.values())
        agreeing = [
            t for t, w in enumerate(target) if w in ADJECTIVE_FORMS or w in ARTICLES.values()
        ]
        assert set(agreeing) <= set(controllers)


def test_verb_agrees_with_subject_number_in_both_languages():
    for example in sample(relative_clause_prob=0.0):
        # No clauses: the art N adj* V art N adj*; the verb is the first verb form.
        noun, plural = NOUN_BY_FRENCH[example.target[1]]
        verb_index = next(t for t, w in enumerate(example.target) if w in VERB_BY_FRENCH)
        verb, verb_plural = VERB_BY_FRENCH[example.target[verb_index]]
        assert verb_plural == plural
        english_verb = next(
            w
            for w in example.source
            if w in {v.english for v in VERBS} | {v.english_plural for v in VERBS}
        )
        assert english_verb == (verb.english_plural if plural else verb.english)
    # With relative clauses the agreement field names each verb's controller noun.
    for example in sample(relative_clause_prob=1.0):
        verbs = [t for t, w in enumerate(example.target) if w in VERB_BY_FRENCH]
        controllers = dict(example.agreement)
        assert len(verbs) >= 2 and all(t in controllers for t in verbs)
        for t in verbs:
            assert (
                VERB_BY_FRENCH[example.target[t]][1]
                == NOUN_BY_FRENCH[example.target[controllers[t]]][1]
            )
        # The subject's clause verb and the main verb agree with the subject (target word 1),
        # the object's clause verb with the object.
        assert controllers[verbs[0]] == controllers[verbs[1]] == 1 != controllers[verbs[2]]


def test_negation_is_discontinuous_and_many_to_many():
    example = next(e for e in sample(negation_prob=1.0) if "not" in e.source)
    ne, pas = example.target.index("ne"), example.target.index("pas")
    not_ = example.source.index("not")
    aligned = {t: sorted(s for s, t2 in example.alignment if t2 == t) for t in (ne, ne + 1, pas)}
    assert aligned[ne] == aligned[pas] == [not_]
    assert aligned[ne + 1] == [not_ - 1, not_ + 1]  # does/do + bare verb
    assert example.source[not_ - 1] in ("does", "do")
    np.testing.assert_allclose(gold_alignment_matrix(example)[ne + 1, [not_ - 1, not_ + 1]], 0.5)


def test_train_test_split_holds_out_unseen_sentences():
    examples = sample(n=300, max_adjectives=0, relative_clause_prob=0.0)
    assert len({e.source for e in examples}) < len(examples)  # duplicates exist to be split
    train, test = train_test_split(examples, test_fraction=0.25, seed=0)
    assert not {e.source for e in train} & {e.source for e in test}
    assert not {e.target for e in train} & {e.target for e in test}
    assert sorted(train + test, key=repr) == sorted(examples, key=repr)
    assert train_test_split(examples, 0.25, seed=0) == (train, test)
    with pytest.raises(ValueError, match="`test_fraction` must be in"):
        train_test_split(examples, 1.0)


def test_toy_translation_pairs_encode():
    examples = sample(n=20)
    pairs = [(e.source, e.target) for e in examples]
    arrays = encode_pairs(
        pairs, Vocab.build(e.source for e in examples), Vocab.build(e.target for e in examples)
    )
    assert arrays["source"].shape[0] == 20
