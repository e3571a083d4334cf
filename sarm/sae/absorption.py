"""Feature absorption by the first-letter protocol (Chanin et al. 2024, "A is for Absorption", arXiv 2409.14507;
SAEBench's ``absorption`` eval, Karvonen et al. 2025, arXiv 2503.09532), on activations of single-token words.

Absorption: a latent that looks like "starts with S" fails to fire on some S-words because a more specific latent
("snake") fires instead and carries the S direction in its decoder row. The protocol measures it against a
ground-truth (GT) linear probe for each letter ℓ:

1. GT probe. A balanced logistic probe on the SAE's input space x' (the per-token standardized hidden state, as
   the SAE reads it) separates ℓ-words from the rest (``sarm.attribution.probes.fit_probe``: fit on train, λ on
   val, F1 on test). Letters with test F1 < ``MIN_PROBE_F1`` (0.6, SAEBench's) are not evaluated: the backbone
   does not say what the SAE is asked to recover. p̂ is the probe's unit direction in x' coordinates.
2. Main latents. The latents ranked by |mean_{ℓ} f_j − mean_{not ℓ} f_j| on train (SAEBench's k-sparse selection,
   ``top_mean_difference``); k grows from 1 while the k-sparse probe's val F1 rises by more than ``F1_JUMP``
   (0.03, SAEBench's ``f1_jump_threshold``; feature splitting), at most ``MAX_MAIN``. Those k are the main latents.
3. Per test word of letter ℓ that the GT probe gets right: its probe projection a = (x' − b_dec) · p̂ (b_dec's
   share is no latent's to explain), each latent's share c_j = f_j · (W_dec,j · p̂) (exact for any decoder norm;
   SAEBench's f_j · cos_j assumes unit rows), main share m = Σ_{j main} c_j, and cos_j = cos(W_dec,j, p̂):

       absorption fraction = 0                       if m ≥ a, or the ≤ 3 largest positive c_j of non-main latents
                                                     with cos_j ≥ 0.1 sum to A < 0.4 · a
                           = 1                       if m ≤ 0
                           = min(A, a − m) / (min(A, a − m) + m)     otherwise
       full absorption     = no main latent fires, the largest c_j has cos_j ≥ 0.025 and c_j ≥ 0.4 · a

   (SAEBench's ``FeatureAbsorptionCalculator`` thresholds.) Each letter's scores are means over its words; the SAE's
   are means over the evaluated letters.

Data: ``first_letter_words`` draws single-token lower-case words from the backbone's own vocabulary, and
``word_activations`` runs the truncated backbone on ``PROMPT_PREFIX`` + " word" (two in-context examples of the
task, as SAEBench's ICL prompt) and keeps the word token's hidden state. SAEBench reads the same position of
"{word} has the first letter:"; a causal model's state at the word does not depend on what follows, so the
trailing template is not run. Differences from SAEBench: a few hundred words from a 135M model's vocabulary
instead of the full vocabulary of a ≥ 2B model; main latents chosen by class-mean difference with val F1, not an
L1 probe's weights with test F1; projections relative to b_dec. It is an equivalent of the protocol at this scale,
not SAEBench's number.
"""

from __future__ import annotations

import random
import string

import torch

from sarm.attribution.probes import SPLITS, fit_probe, top_mean_difference
from sarm.sae.base import SparseAutoencoder

PROMPT_PREFIX = "tartan has the first letter: T. mirror has the first letter: M."
SPACE = "\u0120"  # how byte-level BPE vocabularies (GPT-2, SmolLM2) spell a leading space: "Ġword"
MIN_PROBE_F1 = 0.6
F1_JUMP = 0.03
MAX_MAIN = 10
FULL_COS = 0.025  # full absorption: the top latent's cosine with the probe
FRACTION_COS = 0.1  # absorption fraction: each absorbing latent's cosine with the probe
PROJECTION_SHARE = 0.4  # the absorbing latents must carry this share of the probe projection
MAX_ABSORBERS = 3
EPS = 1e-8


def first_letter_words(tokenizer, per_letter: int = 30, seed: int = 0, min_length: int = 3) -> list[tuple[str, int]]:
    """Up to ``per_letter`` (word, token id) per letter a–z: vocabulary entries " word" (a leading space, so whole
    words, not word pieces) of ≥ ``min_length`` lower-case letters that the tokenizer keeps as one token after
    ``PROMPT_PREFIX`` (the prompt's last token is the word)."""
    prefix = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
    by_letter: dict[str, list[tuple[str, int]]] = {letter: [] for letter in string.ascii_lowercase}
    for token, token_id in sorted(tokenizer.get_vocab().items()):
        word = token[1:]
        if token[:1] == SPACE and len(word) >= min_length and word.isascii() and word.isalpha() and word.islower():
            by_letter[word[0]].append((word, token_id))
    rng = random.Random(seed)
    words = []
    for letter in string.ascii_lowercase:
        candidates = by_letter[letter]
        rng.shuffle(candidates)
        kept = 0
        for word, token_id in candidates:
            if kept == per_letter:
                break
            if tokenizer(f"{PROMPT_PREFIX} {word}", add_special_tokens=False)["input_ids"] == [*prefix, token_id]:
                words.append((word, token_id))
                kept += 1
    return words


@torch.no_grad()
def word_activations(backbone, tokenizer, words: list[tuple[str, int]], batch_size: int = 64) -> torch.Tensor:
    """``[len(words), d]``: the backbone's hidden state at each word's token after ``PROMPT_PREFIX`` (every prompt
    has the same length, so no padding)."""
    prefix = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
    rows = []
    for start in range(0, len(words), batch_size):
        ids = torch.tensor([[*prefix, token_id] for _, token_id in words[start : start + batch_size]])
        rows.append(backbone(ids, torch.ones_like(ids))[:, -1].float())
    return torch.cat(rows)


def word_splits(n: int, seed: int = 0, fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, torch.Tensor]:
    """Word indices per split (train / val / test), a seeded permutation cut at ``fractions``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def letter_probes(x: torch.Tensor, letters: list[str], splits: dict[str, torch.Tensor]) -> dict[str, dict]:
    """The GT probe of every letter with both classes in train and val: ``direction`` (unit, in x's coordinates)
    and its test ``f1``, plus ``correct`` (bool ``[N]``: a test word of the letter the probe predicts positive)."""
    probes = {}
    for letter in sorted(set(letters)):
        y_all = torch.tensor([word_letter == letter for word_letter in letters])
        y = {split: y_all[splits[split]] for split in SPLITS}
        if any(not y[split].any() or y[split].all() for split in ("train", "val")) or not y["test"].any():
            continue
        probe = fit_probe({split: x[splits[split]] for split in SPLITS}, y)
        std = x[splits["train"]].float().std(0).clamp_min(1e-6)  # fit_probe's standardizer
        direction = probe["fit"].weight.float() / std
        correct = torch.zeros(len(letters), dtype=torch.bool)
        correct[splits["test"]] = y["test"] & probe["predicted"]
        probes[letter] = {"direction": direction / direction.norm(), "f1": probe["f1"], "correct": correct}
    return probes


def main_latents(latents: torch.Tensor, y: torch.Tensor, splits: dict[str, torch.Tensor]) -> list[int]:
    """Step 2 of the module docstring: the top-k latents by class-mean difference on train, k grown while the
    k-sparse probe's val F1 gains more than ``F1_JUMP``."""
    ranked = top_mean_difference(latents[splits["train"]], y[splits["train"]], MAX_MAIN).tolist()
    best_f1, k = None, 1
    for size in range(1, MAX_MAIN + 1):
        columns = ranked[:size]
        probe = fit_probe({s: latents[splits[s]][:, columns] for s in SPLITS}, {s: y[splits[s]] for s in SPLITS})
        if best_f1 is not None and probe["f1_val"] - best_f1 <= F1_JUMP:
            break
        best_f1, k = probe["f1_val"], size
    return ranked[:k]


def word_absorption(
    a: float, shares: torch.Tensor, cosines: torch.Tensor, active: torch.Tensor, main: list[int]
) -> tuple[float, bool]:
    """(absorption fraction, full absorption) of one word: step 3 of the module docstring.

    Args:
        a: the word's probe projection (x' − b_dec) · p̂.
        shares: ``[n_latents]`` c_j = f_j · (W_dec,j · p̂).
        cosines: ``[n_latents]`` cos(W_dec,j, p̂).
        active: ``[n_latents]`` bool, f_j > 0.
        main: the letter's main latents.
    """
    is_main = torch.zeros_like(active)
    is_main[main] = True
    m = float(shares[is_main].sum())
    absorbers = shares[~is_main & (cosines >= FRACTION_COS) & (shares > 0)]
    total = float(absorbers.topk(min(MAX_ABSORBERS, absorbers.numel())).values.sum()) if absorbers.numel() else 0.0
    if m >= a or total < PROJECTION_SHARE * a:
        fraction = 0.0
    elif m <= 0:
        fraction = 1.0
    else:
        absorbed = min(total, a - m)
        fraction = min(max(absorbed / (absorbed + m), 0.0), 1.0)
    top = int(shares.argmax())
    full = (
        not bool(active[is_main].any())
        and a > 0
        and float(cosines[top]) >= FULL_COS
        and float(shares[top]) >= PROJECTION_SHARE * a
    )
    return fraction, full


@torch.no_grad()
def absorption(
    sae: SparseAutoencoder, x: torch.Tensor, letters: list[str], splits: dict[str, torch.Tensor], probes: dict
) -> dict:
    """The SAE's first-letter absorption (module docstring).

    Args:
        sae: the SAE (as exported: whitening folded in).
        x: ``[N, d]`` raw hidden states of the words.
        letters: each word's first letter.
        splits: word indices per split (``word_splits``).
        probes: ``letter_probes`` of ``sae.preprocess(x)`` (the same for every SAE with the same preprocessing).

    Returns:
        {"fraction", "full", "letters": evaluated count, "per_letter": letter → {...}}.
    """
    sae = sae.eval()
    inputs = sae.preprocess(x)
    latents = sae.encode(x).float()
    decoder = sae.W_dec.float()
    per_letter = {}
    for letter, probe in probes.items():
        if probe["f1"] < MIN_PROBE_F1:
            continue
        y = torch.tensor([word_letter == letter for word_letter in letters])
        main = main_latents(latents, y, splits)
        p = probe["direction"]
        along = decoder @ p
        cosines = along / decoder.norm(dim=1).clamp_min(EPS)
        scores = [
            word_absorption(float((inputs[i] - sae.b_dec) @ p), latents[i] * along, cosines, latents[i] > 0, main)
            for i in probe["correct"].nonzero().flatten().tolist()
        ]
        if not scores:
            continue
        per_letter[letter] = {
            "fraction": sum(s[0] for s in scores) / len(scores),
            "full": sum(s[1] for s in scores) / len(scores),
            "words": len(scores),
            "main_latents": main,
            "probe_f1": probe["f1"],
        }
    count = len(per_letter)
    return {
        "fraction": sum(v["fraction"] for v in per_letter.values()) / count if count else None,
        "full": sum(v["full"] for v in per_letter.values()) / count if count else None,
        "letters": count,
        "per_letter": per_letter,
    }
