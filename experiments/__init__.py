"""Experiments: one module per claim about attention, each measured and given a verdict.

An experiment ``NAME`` is

* ``experiments/NAME.py`` with ``measure(config, run_dir) -> numbers``, ``verdict(numbers,
  config)`` (a pure function of the numbers and the config's pre-registered rule), optional
  plots, and ``run(config, run_dir) -> results`` joining them (``attnjax.experiment``), plus a
  two-line ``__main__`` calling ``attnjax.experiment.main``. It trains with the one trainer
  (``attnjax.train.train``: seeds as a vmapped axis), measures with ``attnjax.bench``, counts
  FLOPs with ``attnjax.cost``, and never imports another experiment;
* ``configs/NAME.py`` with ``get_config(arg=None)`` built from ``configs/common.py``: the
  default is the full measurement (>= 5 seeds), ``"tour"`` what the tour runs (>= 3 seeds),
  ``"smoke"`` a tiny variant for the tests (2 seeds);
* an entry in ``REGISTRY`` below, which is what ``attnjax list``, ``attnjax run NAME`` and
  ``python -m experiments.tour`` read.

``results.json`` follows the contract of ``shared/docs/protocol.md`` (``claim``, ``rule``,
``verdict``, ``measured``, ``seeds``, ``metrics`` with per-seed values, mean and a bootstrap
95% interval, ``published``), checked by ``attnjax.experiment.check_results``.

This package lives in the repository checkout, not in the installed ``attnjax`` wheel:
the experiments are the measurements, the package is the library they measure.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: the experiment's name: ``experiments/<name>.py`` and ``configs/<name>.py``.
      claim: the seed claim it tests, as the classic explanations of attention state it.
      tour_variant: the config variant the tour runs.
      smoke_variant: the config variant ``tour --smoke`` and the tests run.
    """

    name: str
    claim: str
    tour_variant: str = "tour"
    smoke_variant: str = "smoke"

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def config(self) -> str:
        return f"configs/{self.name}.py"


# Modules are imported only when run, so listing the experiments stays instant (no JAX).
REGISTRY: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            name="sqrt_dk",
            claim="without the 1/sqrt(d_k) scale the softmax saturates and the gradient vanishes",
        ),
        Experiment(
            name="translation",
            claim="cross-attention learns the alignment: each output word looks back at the "
            "input words it corresponds to",
        ),
        Experiment(
            name="coreference",
            claim="attention lets a pronoun look straight back at its antecedent: in 'The trophy "
            "didn't fit in the suitcase because it was too big', 'it' attends to 'trophy'",
        ),
        Experiment(
            name="fading_memory",
            claim="an RNN's information from early words fades, while attention connects any "
            "two positions directly regardless of distance",
        ),
        Experiment(
            name="parallelism",
            claim="attention processes the whole sequence in one parallel sweep, where an RNN "
            "needs one sequential step per token",
        ),
        Experiment(
            name="contextual_meaning",
            claim="attention makes the same word mean different things in different contexts "
            "(\"bank\" near \"river\" vs near \"money\") in a real pretrained model",
        ),
        Experiment(
            name="pretrained_heads",
            claim="in a real pretrained model, some attention head sends \"it\" to its "
            "antecedent (\"The trophy didn't fit in the suitcase because it was too big\")",
        ),
        Experiment(
            name="retrieval",
            claim="sentence embeddings built by attention retrieve passages by meaning, "
            "not only by shared words",
        ),
        Experiment(
            name="heads",
            claim="attention heads specialise (coreference, position, delimiters), though the "
            "specialisation is messier than the diagrams suggest",
        ),
        Experiment(
            name="explanation",
            claim="high attention weight is not the same as high importance: attention can "
            "disagree with measured importance, and very different attention can give the "
            "same output",
        ),
        Experiment(
            name="induction",
            claim="in-context learning involves patterns in the attention weights: induction "
            "heads look back at what followed the previous occurrence of the current token",
        ),
        Experiment(
            name="scaling",
            claim="attention's cost scales quadratically with sequence length: doubling the "
            "tokens roughly quadruples the computation",
        ),
        Experiment(
            name="scale_out",
            claim="attention parallelises: split the sequence over n devices (ring attention) "
            "and each holds about 1/n of the memory while the communication grows only "
            "linearly with length; sharded training learns exactly what one device learns",
        ),
        Experiment(
            name="lm_induction",
            claim="in a real LLM, in-context learning shows as attention patterns: on a "
            "repeated random sequence, induction heads attend to the token after the previous "
            "occurrence, and removing them removes the in-context gain",
        ),
        Experiment(
            name="logit_lens",
            claim="attention layers build meaning up through depth: read through the "
            "unembedding, the residual stream reaches the model's next-token prediction only "
            "in the later layers",
        ),
        Experiment(
            name="lm_coreference",
            claim="in a real causal LLM, 'it' in 'The trophy didn't fit in the suitcase "
            "because it was too big' attends to its antecedent: some head picks the right "
            "candidate on Winograd schemas",
        ),
        Experiment(
            name="positions",
            claim="attention is inherently order-agnostic: position information must be "
            "explicitly added (unless a causal mask already leaks the order)",
        ),
        Experiment(
            name="syntax_heads",
            claim="attention heads specialise in grammar: some head tracks grammatical "
            "structure, attending from a word to its syntactic head",
        ),
        Experiment(
            name="layer_probes",
            claim="attention builds understanding up through the layers: early layers learn "
            "basic grammar, middle layers pronoun resolution, later layers meaning",
        ),
        Experiment(
            name="agreement",
            claim="a verb's attention finds its subject across distance and distracting nouns "
            "(subject-verb agreement with attractors)",
        ),
    )
}
