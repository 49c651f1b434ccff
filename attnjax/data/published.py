"""What papers report, quoted from their text, for the experiments to put beside their own
numbers (issue 16: taken from the paper itself, never from memory). Each entry says where
in the paper it stands."""

# Olsson et al. 2022, "In-context Learning and Induction Heads" (transformer-circuits.pub,
# Mar 8 2022; arXiv 2209.11895): Argument 1 and the abstract.
OLSSON_2022 = {
    "after": '"Before this window there is less than 0.15 nats of in-context learning, after it '
             'there is roughly 0.4 nats ... constant across many different model sizes"',
    "one_layer": '"The exception is the one-layer model, where induction heads never form - '
                 'just as in-context learning never substantially develops for the one-layer '
                 'model."',
    "window": '"it develops abruptly in a narrow window early in training (roughly 2.5 to 5 '
              'billion tokens)"',
    "causal": '"For small attention-only models, we present strong, causal evidence; for '
              'larger models with MLPs, we present correlational evidence."',
}
