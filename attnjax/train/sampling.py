"""Sampling from any ``DecoderOnlyLM``: temperature, top-k and nucleus (top-p) over a KV cache.

``sample_logits`` is the pure function that turns next-token logits into ids; ``generate``
runs a model: one prefill call over the whole prompt, then one cached step per new token
inside a jitted ``lax.while_loop`` (the conventions of ``attnjax.train.decoding``), stopping
as soon as every sequence has emitted a stop id.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.nn.transformer import DecoderOnlyLM, TransformerConfig

Array = jax.Array
_CACHE_COUNTERS = ("cache_index", "position_index")  # the step counters in a decode cache
_FILL = -1  # output slots after a sequence's stop id (trimmed before returning)


def _check_sampling(caller: str, temperature, top_k, top_p) -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ValueError(
            f"{caller}: `temperature` must be a finite number >= 0, got {temperature!r}"
        )
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1
    ):
        raise ValueError(f"{caller}: `top_k` must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1
    ):
        raise ValueError(f"{caller}: `top_p` must be None or a number in (0, 1], got {top_p!r}")


def _filter_logits(logits: Array, top_k: int | None, top_p: float | None) -> Array:
    """Set the logits outside the top-k and then outside the nucleus to -inf (ties kept)."""
    neg_inf = jnp.array(-jnp.inf, logits.dtype)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth_largest, neg_inf, logits)
    if top_p is not None and top_p < 1:
        # Holtzman et al. 2020: the smallest set of tokens whose probability reaches top_p.
        # A token is kept when the mass of the tokens ranked above it is still below top_p,
        # so the top token is always kept (as HF's min_tokens_to_keep=1).
        descending = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(descending, axis=-1)
        mass_above = jnp.cumsum(probs, axis=-1) - probs
        kept = jnp.where(mass_above < top_p, descending, jnp.inf)
        cutoff = jnp.min(kept, axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg_inf, logits)
    return logits


def sample_logits(
    logits: Array,
    key: Array | None,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Draw one token id per row of ``logits``.

    Filters as Hugging Face's ``generate`` does: divide by the temperature, keep the
    ``top_k`` largest logits, then the nucleus of mass ``top_p`` among those, and sample
    from the softmax of what is left. Pure jnp: jit-able (the settings are Python values,
    static under jit) and vmap-able over ``key``.

    Args:
      logits: ``[..., V]`` unnormalised next-token scores (``[B, V]`` from a model).
      key: a ``jax.random`` key; unused (may be None) when ``temperature == 0``.
      temperature: 0 picks the argmax (greedy); > 0 samples from ``softmax(logits / T)``.
      top_k: keep the ``top_k`` largest logits (ties with the k-th are kept); None keeps all.
      top_p: keep the smallest set of tokens whose probability is >= ``top_p`` (always at
        least the top token); None or 1 keeps all.

    Returns:
      ``[...]`` int32 token ids.
    """
    _check_sampling("sample_logits", temperature, top_k, top_p)
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(
            f"sample_logits: `logits` must be floating scores of shape [..., V], got shape "
            f"{list(logits.shape)} dtype {logits.dtype}"
        )
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if key is None:
        raise ValueError("sample_logits: `key` is required when temperature > 0")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature
    logits = _filter_logits(logits, top_k, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _decode_config(config: TransformerConfig) -> TransformerConfig:
    return config.replace(decode=True, dropout_rate=0.0, attention_dropout_rate=0.0)


def _set_counters(cache: Any, value: Array) -> Any:
    """Every ``cache_index`` / ``position_index`` leaf of ``cache`` set to ``value``."""

    def reset(path, leaf):
        name = getattr(path[-1], "key", None) if path else None
        return jnp.asarray(value, leaf.dtype) if name in _CACHE_COUNTERS else leaf

    return jax.tree_util.tree_map_with_path(reset, cache)


def _memoized(builder):
    """``functools.lru_cache`` that falls back to building afresh for unhashable keys (a
    config whose ``attention_cls`` or ``dtype`` does not hash)."""
    cached = functools.lru_cache(maxsize=64)(builder)

    @functools.wraps(builder)
    def get(*key):
        try:
            hash(key)
        except TypeError:
            return builder(*key)
        return cached(*key)

    get.cache_info = cached.cache_info
    get.cache_clear = cached.cache_clear
    return get


@_memoized
def _prefill_fn(config: TransformerConfig, cache_len: int):
    """Jitted ``(params, tokens [B, Lp], prompt_len) -> (logits [B, V], cache)``."""
    model = DecoderOnlyLM(config)

    def prefill_fn(params, tokens, prompt_len):
        # Cache shapes from an abstract init at full length: no forward over cache_len tokens.
        dummy = jnp.zeros((tokens.shape[0], cache_len), jnp.int32)
        shapes = jax.eval_shape(model.init, jax.random.key(0), dummy)["cache"]
        cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        logits, mutated = model.apply(
            {"params": params, "cache": cache}, tokens, mutable=["cache"]
        )
        last = jax.lax.dynamic_index_in_dim(logits, prompt_len - 1, axis=1, keepdims=False)
        # The prompt was right-padded to a multiple of pad_multiple (one compilation per
        # padded length, not per prompt length), so the cache holds keys/values of junk pad
        # tokens at positions prompt_len..Lp-1 and its counters read Lp. Rewinding the
        # counters to prompt_len is exact: decode step t writes position prompt_len + t
        # (overwriting the junk) before attending, and the cache's causal mask (kv position
        # <= query position) hides every position not yet written. The real positions never
        # saw the junk either: the prefill itself is causal.
        return last, _set_counters(mutated["cache"], prompt_len)

    return jax.jit(prefill_fn)


@_memoized
def _decode_fn(
    config: TransformerConfig,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_ids: tuple[int, ...],
):
    """Jitted ``(params, cache, logits [B, V], key) -> tokens [B, max_new_tokens]``."""
    model = DecoderOnlyLM(config)
    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
    stops = jnp.asarray(stop_ids, jnp.int32)

    def is_stop(token):
        if not stop_ids:
            return jnp.zeros(token.shape, bool)
        return jnp.any(token[:, None] == stops[None, :], axis=-1)

    def decode_fn(params, cache, logits, key):
        first = sample(logits, jax.random.fold_in(key, 0))
        out = jnp.full((first.shape[0], max_new_tokens), _FILL, jnp.int32)
        out = out.at[:, 0].set(first)

        def cond(carry):
            i, _, _, _, done = carry
            return (i < max_new_tokens) & ~jnp.all(done)

        def body(carry):
            i, cache, previous, out, done = carry
            logits, mutated = model.apply(
                {"params": params, "cache": cache}, previous[:, None], mutable=["cache"]
            )
            token = sample(logits[:, -1], jax.random.fold_in(key, i))
            # A finished row keeps decoding (the batch runs in lockstep); its output is fill.
            out = jax.lax.dynamic_update_slice_in_dim(
                out, jnp.where(done, _FILL, token)[:, None], i, axis=1
            )
            return i + 1, mutated["cache"], token, out, done | is_stop(token)

        init = (jnp.array(1), cache, first, out, is_stop(first))
        return jax.lax.while_loop(cond, body, init)[3]

    return jax.jit(decode_fn)


def _is_token_id(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _prompt_array(prompt_ids, vocab_size: int) -> tuple[np.ndarray, bool]:
    """``(ids [B, P] int32, batched)`` from a list of ids or a list of equal-length lists."""
    if isinstance(prompt_ids, np.ndarray | jax.Array):
        prompt_ids = np.asarray(prompt_ids).tolist()
    if isinstance(prompt_ids, str | bytes) or not isinstance(prompt_ids, Sequence):
        raise TypeError(
            "generate: `prompt_ids` must be a list of token ids or a list of equal-length "
            f"lists, got {type(prompt_ids).__name__}"
        )
    if len(prompt_ids) == 0:
        raise ValueError("generate: `prompt_ids` is empty; give at least one token")
    first = prompt_ids[0]
    batched = isinstance(first, np.ndarray) or (
        isinstance(first, Sequence) and not isinstance(first, str | bytes)
    )
    rows = list(prompt_ids) if batched else [prompt_ids]
    rows = [row.tolist() if isinstance(row, np.ndarray) else row for row in rows]
    for row in rows:
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise TypeError(
                f"generate: `prompt_ids` rows must be lists of token ids, got {row!r}"
            )
        if len(row) == 0:
            raise ValueError("generate: `prompt_ids` has an empty prompt")
        bad = [x for x in row if not _is_token_id(x)]
        if bad:
            raise TypeError(f"generate: `prompt_ids` must hold integer ids, got {bad[0]!r}")
        out_of_range = [x for x in row if not 0 <= x < vocab_size]
        if out_of_range:
            raise ValueError(
                f"generate: `prompt_ids` must be in [0, vocab_size={vocab_size}), got "
                f"{out_of_range[0]}"
            )
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"generate: the prompts in `prompt_ids` must have equal lengths, got {sorted(lengths)}"
        )
    return np.asarray(rows, np.int32), batched


def _check_positive_int(caller: str, name: str, value) -> None:
    if not _is_token_id(value):
        raise TypeError(f"{caller}: `{name}` must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{caller}: `{name}` must be >= 1, got {value}")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def prefill(
    config: TransformerConfig,
    params: Any,
    tokens: Array,
    *,
    cache_len: int,
    pad_multiple: int = 16,
) -> tuple[Array, Any]:
    """Run a whole prompt through the decode-mode model in one call.

    Args:
      config: the model's config (``decode`` and dropout are set here).
      params: the ``DecoderOnlyLM`` parameters (the ``'params'`` collection).
      tokens: ``[B, P]`` int prompt ids.
      cache_len: L, the KV cache length (``P <= L <= config.max_len``).
      pad_multiple: the prompt is right-padded to a multiple of this (capped at L) so that
        prompts of nearby lengths share one compilation; 1 runs it unpadded.

    Returns:
      ``(logits [B, V], cache)``: the next-token logits after the last prompt token, and the
      ``'cache'`` collection positioned at ``P``, ready for one-token decode steps.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or tokens.shape[1] < 1:
        raise ValueError(
            f"prefill: `tokens` must be integer ids of shape [B, P] with P >= 1, got shape "
            f"{list(tokens.shape)} dtype {tokens.dtype}"
        )
    _check_positive_int("prefill", "cache_len", cache_len)
    _check_positive_int("prefill", "pad_multiple", pad_multiple)
    prompt_len = tokens.shape[1]
    if not prompt_len <= cache_len <= config.max_len:
        raise ValueError(
            f"prefill: `cache_len`={cache_len} must lie between the prompt length {prompt_len} "
            f"and config.max_len={config.max_len}"
        )
    padded_len = min(_round_up(prompt_len, pad_multiple), cache_len)
    # Any valid id will do for the padding: it is never attended to (see _prefill_fn).
    pad = config.pad_id if 0 <= config.pad_id < config.vocab_size else 0
    padded = np.pad(
        tokens.astype(np.int32), ((0, 0), (0, padded_len - prompt_len)), constant_values=pad
    )
    fn = _prefill_fn(_decode_config(config), cache_len)
    return fn(params, padded, jnp.asarray(prompt_len, jnp.int32))


def generate(
    config: TransformerConfig,
    params: Any,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_ids: int | Sequence[int] = (),
    cache_len: int | None = None,
    pad_multiple: int = 16,
) -> list[int] | list[list[int]]:
    """Continue prompts with a ``DecoderOnlyLM`` over its KV cache.

    The prompt goes through the model in one prefill call (right-padded to a multiple of
    ``pad_multiple``), then each new token is one cached step inside a jitted
    ``lax.while_loop``. The compiled programs are kept per (config, shapes, settings), so
    a second call with the same shapes and settings does not compile again; the seed is
    an argument, not a setting.

    Args:
      config: the model's config (``decode=True`` and no dropout are set here).
      params: the ``DecoderOnlyLM`` parameters (the ``'params'`` collection).
      prompt_ids: one prompt (a list of ids) or a batch (a list of equal-length lists).
      max_new_tokens: the most tokens to generate per prompt (>= 1).
      temperature, top_k, top_p: as ``sample_logits``; temperature 0 is greedy.
      seed: step ``i`` samples with ``jax.random.fold_in(jax.random.key(seed), i)``, so a
        seed gives the same tokens every time.
      stop_ids: ids that end a sequence; as Hugging Face's ``eos_token_id``, the stop id is
        included as the last returned token. Generation ends when every sequence stopped.
      cache_len: KV cache length; default: prompt length + ``max_new_tokens`` rounded up to
        a multiple of ``pad_multiple`` (capped at ``config.max_len``).
      pad_multiple: the prompt (and default cache) padding granularity.

    Returns:
      The new tokens only (not the prompt): a ``list[int]`` for one prompt, a list of those
      for a batch; each as long as ``max_new_tokens`` or ending with its first stop id.
    """
    _check_sampling("generate", temperature, top_k, top_p)
    _check_positive_int("generate", "max_new_tokens", max_new_tokens)
    _check_positive_int("generate", "pad_multiple", pad_multiple)
    if not _is_token_id(seed):
        raise TypeError(f"generate: `seed` must be an integer, got {seed!r}")
    stops = (stop_ids,) if _is_token_id(stop_ids) else tuple(stop_ids)
    if not all(_is_token_id(s) for s in stops):
        raise TypeError(f"generate: `stop_ids` must be integer ids, got {stop_ids!r}")
    tokens, batched = _prompt_array(prompt_ids, config.vocab_size)

    prompt_len = tokens.shape[1]
    total = prompt_len + max_new_tokens
    if total > config.max_len:
        raise ValueError(
            f"generate: the prompt length {prompt_len} + `max_new_tokens`={max_new_tokens} = "
            f"{total} overflows the KV cache: config.max_len={config.max_len}"
        )
    if cache_len is None:
        cache_len = min(_round_up(total, pad_multiple), config.max_len)
    else:
        _check_positive_int("generate", "cache_len", cache_len)
        if not total <= cache_len <= config.max_len:
            raise ValueError(
                f"generate: `cache_len`={cache_len} must hold the prompt length {prompt_len} "
                f"+ `max_new_tokens`={max_new_tokens} = {total} and be <= "
                f"config.max_len={config.max_len}"
            )

    logits, cache = prefill(
        config, params, tokens, cache_len=cache_len, pad_multiple=pad_multiple
    )
    decode_fn = _decode_fn(
        _decode_config(config),
        max_new_tokens,
        float(temperature),
        None if top_k is None else int(top_k),
        None if top_p is None else float(top_p),
        tuple(sorted({int(s) for s in stops})),
    )
    out = np.asarray(decode_fn(params, cache, logits, jax.random.key(seed)))
    stop_set = set(stops)
    rows = []
    for row in out.tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in stop_set), len(row))
        rows.append(row[:end])
    return rows if batched else rows[0]
