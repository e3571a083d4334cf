"""Reading the cache: token streams cover their split exactly once per pass; pairs line up."""

import pytest
import torch
from safetensors.torch import load_file

from sarm.data.activations import ActivationCache, PairActivationDataModule, TokenActivationDataModule, TokenStream
from sarm.errors import SarmInputError


def split_tokens(cache: ActivationCache, split: str) -> torch.Tensor:
    mask = cache.pair_split_mask(split)
    shards = [load_file(p) for p in cache.shard_paths()]
    return torch.cat([s["tokens"][mask[s["token_seq"] // 2]] for s in shards]).float()


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    # Order-free comparison: sort rows by a random projection.
    key = x @ torch.linspace(-1, 1, x.shape[1])
    return x[key.argsort()]


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_pass_yields_each_token_of_the_split_exactly_once(tiny_cache, shuffle):
    cache = ActivationCache(tiny_cache["cache"])
    stream = TokenStream(cache, "train", batch_size=64, shuffle=shuffle, buffer_shards=2, seed=0)
    batches = list(stream)
    assert len(batches) == len(stream)
    assert all(len(b) == 64 for b in batches[:-1])
    got, expected = torch.cat(batches).float(), split_tokens(cache, "train")
    assert len(got) == len(expected) == stream.num_tokens
    torch.testing.assert_close(_sorted_rows(got), _sorted_rows(expected))


def test_shuffling_changes_order_between_passes(tiny_cache):
    stream = TokenStream(ActivationCache(tiny_cache["cache"]), "train", 64, shuffle=True, buffer_shards=2, seed=0)
    first, second = torch.cat(list(stream)), torch.cat(list(stream))
    assert not torch.equal(first, second)


def test_sequence_fraction_draws_that_share_from_last_tokens(tiny_cache):
    cache = ActivationCache(tiny_cache["cache"])
    stream = TokenStream(cache, "train", 64, shuffle=True, buffer_shards=2, seed=0, sequence_fraction=0.25)
    train = cache.pair_indices("train")
    last = cache.last_token_activations()[torch.cat([2 * train, 2 * train + 1])]
    batch = next(iter(stream))
    assert len(batch) == 64
    tail = batch[-16:]
    assert all((row == last).all(1).any() for row in tail)  # each row is a train pair's last token


def test_sequence_fraction_out_of_range_is_rejected(tiny_cache):
    with pytest.raises(SarmInputError, match="sequence_fraction"):
        TokenActivationDataModule(str(tiny_cache["cache"]), sequence_fraction=1.0)


def test_pair_batches_hold_each_pairs_chosen_and_rejected_last_tokens(tiny_cache):
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    last = dm.cache.last_token_activations().float()
    seen = []
    for batch in dm.test_dataloader():
        n = len(batch["pair"])
        assert batch["hidden"].shape[:2] == (2 * n, 1) and batch["mask"].all()
        torch.testing.assert_close(batch["hidden"][:n, 0].float(), last[2 * batch["pair"]])
        torch.testing.assert_close(batch["hidden"][n:, 0].float(), last[2 * batch["pair"] + 1])
        seen += batch["pair"].tolist()
    assert sorted(seen) == dm.cache.pair_indices("test").tolist()
    splits = [set(dm.cache.pair_indices(s).tolist()) for s in ("train", "val", "test")]
    assert set.union(*splits) == set(range(48)) and sum(map(len, splits)) == 48


def test_a_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(SarmInputError, match="run `sarm cache` first"):
        ActivationCache(tmp_path)


def test_mean_pooling_batches_hold_every_response_token_in_order(tiny_cache):
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=4, pooling="mean")
    tokens = {}
    for path in dm.cache.shard_paths():
        shard = dm.cache.load_shard(path)
        for seq, pos, h in zip(shard["token_seq"].tolist(), shard["token_pos"].tolist(), shard["tokens"]):
            tokens.setdefault(seq, []).append((pos, h))
    last = dm.cache.last_token_activations()
    batch = next(iter(dm.val_dataloader()))
    n = len(batch["pair"])
    for row, seq in enumerate(torch.cat([2 * batch["pair"], 2 * batch["pair"] + 1]).tolist()):
        expected = torch.stack([h for _, h in sorted(tokens[seq], key=lambda t: t[0])])
        length = int(batch["mask"][row].sum())
        assert length == len(expected) and not batch["mask"][row, length:].any()
        torch.testing.assert_close(batch["hidden"][row, :length], expected)
        torch.testing.assert_close(batch["hidden"][row, length - 1], last[seq])  # the last response token
    assert batch["hidden"].shape[0] == 2 * n


def test_response_tokens_are_the_same_whether_one_shard_or_all_are_kept_in_memory(tiny_cache):
    """Attribution reads shards through a small LRU; shuffled training keeps them all: same batches."""
    streaming, resident = ActivationCache(tiny_cache["cache"], resident_shards=1), ActivationCache(tiny_cache["cache"])
    resident.hold_all_shards()
    assert len(streaming.shard_paths()) > 2  # else the LRU is never exercised
    shards = [load_file(p) for p in streaming.shard_paths()]
    seq, pos = torch.cat([s["token_seq"] for s in shards]).long(), torch.cat([s["token_pos"] for s in shards]).long()
    tokens = torch.cat([s["tokens"] for s in shards])
    for sequences in (torch.arange(0, 20), torch.tensor([37, 2, 90, 5, 64, 1])):
        hidden, mask = streaming.response_tokens(sequences)
        hidden_all, mask_all = resident.response_tokens(sequences)
        assert torch.equal(hidden, hidden_all) and torch.equal(mask, mask_all)
        for row, s in enumerate(sequences.tolist()):  # against the shards read directly
            mine = pos[seq == s].argsort()
            expected = tokens[seq == s][mine]
            assert int(mask[row].sum()) == len(expected)
            assert torch.equal(hidden[row, :len(expected)], expected)
            assert not hidden[row, len(expected):].any()
    assert len(streaming._shards) == 1


def test_pair_columns_come_from_pairs_jsonl(tiny_cache):
    cache = ActivationCache(tiny_cache["cache"])
    columns = cache.columns
    for i, row in enumerate(cache.pairs):
        assert cache.pair_split_mask(row["split"])[i]
        assert float(columns.margin[i]) == (row["margin"] or 0.0)
