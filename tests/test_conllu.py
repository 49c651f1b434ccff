"""The CoNLL-U reader (``attnjax.data.conllu``) and word-level attention
(``attnjax.analysis.words``) on small inline samples: no ``../shared`` needed."""

import numpy as np
import pytest

from attnjax.analysis import words
from attnjax.data import conllu

SAMPLE = """\
# newdoc id = doc1
# sent_id = s1
# text = I didn't see the dog.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t4:nsubj\t_
2-3\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdid\tdo\tAUX\tVBD\t_\t4\taux\t4:aux\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t4:advmod\t_
4\tsee\tsee\tVERB\tVB\t_\t0\troot\t0:root\t_
5\tthe\tthe\tDET\tDT\t_\t6\tdet\t6:det\t_
6\tdog\tdog\tNOUN\tNN\tNumber=Sing\t4\tobj\t4:obj\tSpaceAfter=No
6.1\tsaw\tsee\tVERB\tVBD\t_\t_\t_\t4:conj\tCopyOf=4
7\t.\t.\tPUNCT\t.\t_\t4\tpunct\t4:punct\t_

# sent_id = s2
1\tBush\tBush\tPROPN\tNNP\t_\t2\tnmod:poss\t2:nmod:poss\t_
2\tnominated\tnominate\tVERB\tVBD\t_\t0\troot\t0:root\tSpaceAfter=No
3\t!\t!\tPUNCT\t.\t_\t2\tpunct\t2:punct\t_
"""


def test_parse_keeps_the_basic_tree_and_skips_multiword_and_empty_lines():
    first, second = conllu.parse(SAMPLE)
    assert first.sent_id == "s1" and first.text == "I didn't see the dog."
    assert first.words == ("I", "did", "n't", "see", "the", "dog", ".")
    assert first.upos[3] == "VERB" and first.xpos[4] == "DT" and first.lemmas[1] == "do"
    assert first.feature(5, "Number") == "Sing" and first.feature(5, "Person") is None
    assert first.feature(0, "Number") is None  # "_": no features
    assert first.heads == (4, 4, 4, 0, 6, 4, 4)
    assert first.head_index(3) == -1 and first.head_index(4) == 5
    assert first.tokens == ((1, 2, "didn't"),)
    assert first.space_after == (True, True, True, True, True, False, True)
    assert (5, 3, "obj") in first.arcs() and len(first.arcs()) == 6  # the root has no arc
    # No "# text": the forms joined as SpaceAfter says; subtypes dropped by relation().
    assert second.text == "Bush nominated!" and second.sent_id == "s2"
    assert second.deprels[0] == "nmod:poss" and second.relation(0) == "nmod"


def test_word_spans_split_a_multiword_token_where_its_forms_spell_it():
    first, second = conllu.parse(SAMPLE)
    spans = conllu.word_spans(first)
    assert [first.text[a:b] for a, b in spans] == list(first.words)
    assert spans[1] == (2, 5) and spans[2] == (5, 8)  # "did" + "n't" inside "didn't"
    assert [second.text[a:b] for a, b in conllu.word_spans(second)] == list(second.words)
    odd = conllu.parse(SAMPLE.replace("2\tdid\tdo", "2\tdo\tdo"))[0]  # "do"+"n't" != "didn't"
    assert conllu.word_spans(odd) is None
    missing = conllu.parse(SAMPLE.replace("# text = I didn't", "# text = You didn't"))[0]
    assert conllu.word_spans(missing) is None


def test_relation_counts_are_sorted_by_frequency():
    counts = conllu.relation_counts(conllu.parse(SAMPLE))
    assert list(counts)[:1] == ["punct"] and counts["punct"] == 2 and counts["nmod"] == 1
    assert sum(counts.values()) == 6 + 2


@pytest.mark.parametrize("bad, message", [
    ("1\tI\tI\tPRON\n", "10 tab-separated columns"),
    ("2\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", "count 1, 2"),
    ("1\tI\tI\tPRON\tPRP\t_\t5\troot\t_\t_\n", "HEAD 5, outside 0..1"),
    ("1\tI\tI\tPRON\tPRP\t_\tx\troot\t_\t_\n", "HEAD 'x'"),
    ("1-3\tIt's\t_\t_\t_\t_\t_\t_\t_\t_\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n",
     "multiword token 1-3"),
])
def test_malformed_lines_name_the_source_and_line(bad, message):
    with pytest.raises(ValueError, match=message) as info:
        conllu.parse(bad, source="sample.conllu")
    assert "sample.conllu:1" in str(info.value)


def test_missing_treebank_names_the_path_and_where_the_project_keeps_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="ud_english_ewt") as info:
        conllu.load_ud_ewt("dev", root=tmp_path)
    assert str(tmp_path / "en_ewt-ud-dev.conllu") in str(info.value)
    with pytest.raises(ValueError, match="split"):
        conllu.ud_ewt_path("train")
    (tmp_path / "en_ewt-ud-test.conllu").write_text(SAMPLE)
    assert len(conllu.load_ud_ewt("test", root=tmp_path)) == 2


def test_piece_words_for_wordpiece_and_byte_level_offsets():
    text = "I didn't see"
    spans = [(0, 1), (2, 5), (5, 8), (9, 12)]
    # BERT-style: [CLS] i didn ' t see [SEP] (special tokens have empty spans).
    bert = [(0, 0), (0, 1), (2, 6), (6, 7), (7, 8), (9, 12), (0, 0)]
    np.testing.assert_array_equal(words.piece_words(bert, text, spans), [-1, 0, 1, 2, 2, 3, -1])
    # Byte-level BPE: pieces carry the space before them; a lone space belongs to no word.
    bpe = [(0, 1), (1, 6), (6, 8), (8, 9), (9, 12)]
    np.testing.assert_array_equal(words.piece_words(bpe, text, spans), [0, 1, 2, -1, 3])
    with pytest.raises(ValueError, match="disjoint"):
        words.piece_words(bert, text, [(0, 3), (2, 5)])


def test_word_attention_sums_over_attended_pieces_and_averages_attending_ones(rng):
    attention = rng.random((2, 3, 5, 5))
    attention /= attention.sum(-1, keepdims=True)
    piece_word = np.array([-1, 0, 1, 1, 2])  # [CLS], w0, w1 (two pieces), w2
    got = words.word_attention(attention, piece_word, 3)
    want = np.zeros((2, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            qs, ks = np.flatnonzero(piece_word == i), np.flatnonzero(piece_word == j)
            want[..., i, j] = attention[..., qs, :][..., :, ks].sum(-1).mean(-1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Each word's row sums to 1 less the weight on the special token.
    np.testing.assert_allclose(got.sum(-1)[..., 1], 1 - attention[..., 2:4, 0].mean(-1))
    vectors = words.word_vectors(np.arange(10.0).reshape(5, 2), piece_word, 4)
    np.testing.assert_allclose(vectors, [[2, 3], [5, 6], [8, 9], [0, 0]])
    with pytest.raises(ValueError, match=r"end in \[T=5, S=5\]"):
        words.word_attention(attention[..., :4], piece_word, 3)
    with pytest.raises(ValueError, match="word indices in"):
        words.word_attention(attention, np.array([0, 0, 1, 5, 2]), 3)
