"""Top-activating (and non-activating) contexts of SAE features, read from an activation cache.

A feature's activation on a cached token t is ``f_i(t) = sae.encode(h_t)[i]`` (the SAE in eval
mode: a BatchTopK SAE uses its inference threshold). One streamed pass over the cache's shards
gives f_i for every cached token of the requested features; nothing of size [tokens, n_latents]
is kept, only [tokens, len(features)].

Top contexts: per feature, each sequence contributes at most its max-activating token
(``argmax_t f_i(t)`` over the sequence's cached tokens), and the k sequences with the largest such
maxima are returned, best first. One context per sequence keeps the top list diverse: a long
response that keeps a feature on would otherwise fill it. Only tokens with f_i > 0 count, so a
feature that fires on fewer than k sequences has fewer contexts.

Background contexts: random cached tokens where the feature is off (f_i = 0), one per sequence,
preferring tokens whose whole window is off (so a detector that reads the window is judged on
text with no activation in it); they are the negatives for detection scoring.

Windows: the sequence is re-rendered with ``render_response`` exactly as ``sarm cache`` rendered it
(same tokenizer, same ``max_length``, same left truncation), so token positions in the cache index
the rendered ids. A window holds up to ``window`` tokens either side of the focus token; tokens the
cache does not hold (the prompt, in a ``tokens: response`` cache) get activation 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sarm.cache import ActivationCache
from sarm.data.render import render_response
from sarm.errors import SarmInputError

SIDES = ("chosen", "rejected")  # sequence id = 2·pair + side index


@dataclass
class Context:
    """One token of one cached sequence, with a window of text around it."""

    pair: int
    side: str  # "chosen" | "rejected"
    sequence: int  # cache sequence id (2·pair + 0 for chosen, + 1 for rejected)
    position: int  # position of the focus token in the rendered (truncated) sequence
    activation: float  # the feature's activation on the focus token
    tokens: list[str]  # the window, one decoded string per token
    activations: list[float]  # the feature's activation on each window token (0.0 where not cached)
    focus: int  # index of the focus token inside ``tokens``

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def _check(cache: ActivationCache, sae, features: list[int]) -> list[int]:
    if cache.hidden_size != sae.d_in:
        raise SarmInputError(
            f"{cache.directory}: the cache holds hidden states of width {cache.hidden_size}, "
            f"the SAE reads width {sae.d_in}"
        )
    features = list(dict.fromkeys(int(f) for f in features))  # dedupe, keep order
    bad = [f for f in features if not 0 <= f < sae.n_latents]
    if bad:
        raise SarmInputError(f"features {bad}: out of range for an SAE of {sae.n_latents} latents")
    return features


@torch.no_grad()
def feature_activations(cache: ActivationCache, sae, features: list[int], batch_size: int = 4096) -> dict:
    """Activations of ``features`` on every cached token, streamed shard by shard.

    Returns ``{"activations": {feature: float32 [n_tok]}, "token_seq": long [n_tok],
    "token_pos": long [n_tok]}``, rows in shard order (row r of every tensor is the same token).
    Memory: one shard plus a [batch_size, n_latents] block of pre-activations at a time.
    """
    features = _check(cache, sae, features)
    device = next(sae.parameters()).device
    columns = torch.tensor(features, dtype=torch.long, device=device)
    was_training = sae.training
    sae.eval()  # BatchTopK reads its inference threshold in eval; training mode would also update it
    try:
        values, seqs, positions = [], [], []
        for path in cache.shard_paths():
            shard = cache.load_shard(path)
            for batch in shard["tokens"].split(batch_size):
                values.append(sae.encode(batch.to(device)).index_select(-1, columns).float().cpu())
            seqs.append(shard["token_seq"].long())
            positions.append(shard["token_pos"].long())
    finally:
        sae.train(was_training)
    acts = torch.cat(values) if values else torch.zeros(0, len(features))
    return {
        "activations": {f: acts[:, i].contiguous() for i, f in enumerate(features)},
        "token_seq": torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long),
        "token_pos": torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long),
    }


class _Windows:
    """Builds ``Context``s: re-renders sequences (memoized) and looks up per-sequence activations."""

    def __init__(self, cache: ActivationCache, acts: dict, tokenizer, window: int):
        if window < 0:
            raise ValueError(f"window = {window}: expected >= 0")
        self.cache, self.acts, self.tokenizer, self.window = cache, acts, tokenizer, window
        self.max_length = cache.manifest["settings"]["max_length"]
        seq = acts["token_seq"]
        # Tokens grouped by sequence: order[offsets[s]:offsets[s+1]] are sequence s's rows, so a
        # window's activations cost O(its sequence), not O(cache), per context.
        self.order = torch.argsort(seq, stable=True)
        counts = torch.bincount(seq, minlength=cache.manifest["num_sequences"])
        self.offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
        self.offsets[1:] = counts.cumsum(0)
        self._rendered: dict[int, tuple[list[int], list[str]]] = {}

    def rows(self, sequence: int) -> torch.Tensor:
        return self.order[self.offsets[sequence] : self.offsets[sequence + 1]]

    def rendered(self, sequence: int) -> tuple[list[int], list[str]]:
        if sequence not in self._rendered:
            pair = self.cache.pairs[sequence // 2]
            response = pair[SIDES[sequence % 2]]
            ids = render_response(self.tokenizer, pair["prompt"], response, self.max_length).input_ids
            last = int(self.acts["token_pos"][self.rows(sequence)].max())
            # The cache always holds a sequence's last token: a different length means this tokenizer
            # (or template) does not render the cached sequences, and every window would be misplaced.
            if last != len(ids) - 1:
                raise SarmInputError(
                    f"{self.cache.directory}: sequence {sequence} (pair {sequence // 2}) renders to {len(ids)} tokens "
                    f"with this tokenizer, but the cache ends it at position {last}: use the cache's tokenizer "
                    f"({self.cache.manifest.get('model')})"
                )
            # One id at a time: readable text (" the", "\n") rather than byte-level symbols ("Ġthe", "Ċ").
            tokens = [self.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]
            self._rendered[sequence] = (ids, tokens)
        return self._rendered[sequence]

    def window_is_off(self, feature: int, sequence: int, position: int) -> bool:
        rows = self.rows(sequence)
        near = (self.acts["token_pos"][rows] - position).abs() <= self.window
        return not bool((self.acts["activations"][feature][rows][near] > 0).any())

    def context(self, feature: int, sequence: int, position: int) -> Context:
        _, tokens = self.rendered(sequence)
        start, end = max(0, position - self.window), min(len(tokens), position + self.window + 1)
        window_acts = [0.0] * (end - start)
        rows = self.rows(sequence)
        values = self.acts["activations"][feature][rows]
        for p, v in zip(self.acts["token_pos"][rows].tolist(), values.tolist()):
            if start <= p < end:
                window_acts[p - start] = v
        focus = position - start
        return Context(
            pair=sequence // 2,
            side=SIDES[sequence % 2],
            sequence=sequence,
            position=position,
            activation=window_acts[focus],
            tokens=tokens[start:end],
            activations=window_acts,
            focus=focus,
        )


def _activations(cache: ActivationCache, sae, features: list[int], activations: dict | None) -> dict:
    if activations is None:
        return feature_activations(cache, sae, features)
    missing = [f for f in features if int(f) not in activations["activations"]]
    if missing:
        raise ValueError(
            f"features {missing}: not in the activations passed (computed for {sorted(activations['activations'])})"
        )
    return activations


def _in_split(cache: ActivationCache, token_seq: torch.Tensor, split: str) -> torch.Tensor:
    return cache.pair_split_mask(split)[token_seq // 2]


def _prepare(cache, sae, features, tokenizer, window, split, activations):
    """(activations of the features, the window builder, the split's token mask) for a context query."""
    acts = _activations(cache, sae, features, activations)
    return acts, _Windows(cache, acts, tokenizer, window), _in_split(cache, acts["token_seq"], split)


def top_activating_contexts(
    cache: ActivationCache,
    sae,
    features: list[int],
    tokenizer,
    k: int = 10,
    window: int = 12,
    split: str = "all",
    activations: dict | None = None,
) -> dict[int, list[Context]]:
    """Per feature, up to ``k`` contexts: the max-activating token of the k best sequences, best first.

    ``activations`` (from ``feature_activations``) skips the pass over the cache when the caller
    has it already.
    """
    acts, windows, in_split = _prepare(cache, sae, features, tokenizer, window, split, activations)
    out: dict[int, list[Context]] = {}
    for feature in dict.fromkeys(int(f) for f in features):
        values = acts["activations"][feature]
        candidates = torch.nonzero(in_split & (values > 0)).squeeze(1)
        # Descending by activation; ties broken by row so the result is deterministic.
        ranked = candidates[torch.argsort(values[candidates], descending=True, stable=True)]
        seen: set[int] = set()
        contexts = []
        for row in ranked.tolist():  # stops after k distinct sequences
            sequence = int(acts["token_seq"][row])
            if sequence in seen:
                continue  # a later (smaller) token of a sequence already represented by its max
            seen.add(sequence)
            contexts.append(windows.context(feature, sequence, int(acts["token_pos"][row])))
            if len(contexts) == k:
                break
        out[feature] = contexts
    return out


def background_contexts(
    cache: ActivationCache,
    sae,
    features: list[int],
    tokenizer,
    n: int = 20,
    window: int = 12,
    seed: int = 0,
    split: str = "all",
    exclude: set[int] | dict[int, set[int]] | None = None,
    activations: dict | None = None,
) -> dict[int, list[Context]]:
    """Per feature, up to ``n`` random contexts centred on tokens where the feature is off.

    One per sequence; sequences in ``exclude`` (e.g. those of the top contexts) are skipped:
    a set applies to every feature, a dict maps a feature to its own set.
    Tokens whose whole window is off are taken first; only if too few exist are tokens that are
    off themselves but have activation elsewhere in the window used (sparse data, dense features).
    """
    acts, windows, in_split = _prepare(cache, sae, features, tokenizer, window, split, activations)
    out: dict[int, list[Context]] = {}
    for feature in dict.fromkeys(int(f) for f in features):
        values = acts["activations"][feature]
        allowed = in_split
        excluded = exclude.get(feature) if isinstance(exclude, dict) else exclude
        if excluded:
            allowed = in_split & ~torch.isin(acts["token_seq"], torch.tensor(sorted(excluded), dtype=torch.long))
        candidates = torch.nonzero(allowed & (values == 0)).squeeze(1)
        generator = torch.Generator().manual_seed(seed + feature)  # per feature: stable if the list changes
        # A bounded number of draws: on a large cache with a dense feature, clean windows may be rare
        # and each draw costs a look at its sequence's activations.
        draws = candidates[torch.randperm(len(candidates), generator=generator)[: max(1000, 50 * n)]].tolist()
        clean, fallback, seen, fallback_seen = [], [], set(), set()
        for row in draws:
            sequence, position = int(acts["token_seq"][row]), int(acts["token_pos"][row])
            if sequence in seen:
                continue
            if not windows.window_is_off(feature, sequence, position):
                if len(fallback) < n and sequence not in fallback_seen:
                    fallback_seen.add(sequence)
                    fallback.append((sequence, position))  # the sequence may still give a clean token later
                continue
            seen.add(sequence)
            clean.append(windows.context(feature, sequence, position))
            if len(clean) == n:
                break
        for sequence, position in fallback:
            if len(clean) >= n:
                break
            if sequence not in seen:
                seen.add(sequence)
                clean.append(windows.context(feature, sequence, position))
        out[feature] = clean
    return out
