"""Reading the cache: token streams cover their split exactly once per pass; pairs line up."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from sarm.cache import ActivationCache, PairActivationDataModule, TokenActivationDataModule
from sarm.cache.datamodules import TokenStream
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
@pytest.mark.parametrize(("split", "batch_size"), [("train", 64), ("train", 4096), ("val", 4096)])
def test_a_pass_yields_each_token_of_the_split_exactly_once(tiny_cache, shuffle, split, batch_size):
    # 4,096 is more than the split holds (and than any buffer of shards): one batch of every token, no empty one
    cache = ActivationCache(tiny_cache["cache"])
    stream = TokenStream(cache, split, batch_size=batch_size, shuffle=shuffle, buffer_shards=2, seed=0)
    batches = list(stream)
    assert len(batches) == len(stream) and all(len(b) for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    got, expected = torch.cat(batches).float(), split_tokens(cache, split)
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
            assert torch.equal(hidden[row, : len(expected)], expected)
            assert not hidden[row, len(expected) :].any()
    assert len(streaming._shards) == 1


def test_pair_columns_come_from_pairs_jsonl(tiny_cache):
    cache = ActivationCache(tiny_cache["cache"])
    columns = cache.columns
    for i, row in enumerate(cache.pairs):
        assert cache.pair_split_mask(row["split"])[i]
        assert float(columns.margin[i]) == (row["margin"] or 0.0)


# -- training order: drawn from (seed, epoch), resumable mid-epoch ---------------------------------


def fitting(datamodule, epoch: int, done: int = 0, rank: int = 0, world_size: int = 1):
    """Attach what a fitting trainer exposes to the datamodule: its epoch, batches done in it, rank."""
    progress = SimpleNamespace(current=SimpleNamespace(ready=done))
    datamodule.trainer = SimpleNamespace(
        current_epoch=epoch,
        global_rank=rank,
        world_size=world_size,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )
    return datamodule


def train_pairs(datamodule) -> list[list[int]]:
    return [batch["pair"].tolist() for batch in datamodule.train_dataloader()]


def test_pair_order_comes_from_the_seed_and_the_epoch_not_the_global_rng(tiny_cache, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    torch.manual_seed(0)
    first = train_pairs(fitting(dm, epoch=2))
    torch.manual_seed(1)  # a resumed process: the global RNG is wherever seed_everything left it
    assert train_pairs(fitting(dm, epoch=2)) == first
    assert train_pairs(fitting(dm, epoch=3)) != first
    assert sorted(sum(first, [])) == dm.cache.pair_indices("train").tolist()
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    assert train_pairs(fitting(dm, epoch=2)) != first


def test_a_resumed_pair_pass_yields_the_batches_the_killed_pass_had_not_reached(tiny_cache):
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    whole = train_pairs(fitting(dm, epoch=1))
    assert len(whole) == 5
    assert train_pairs(fitting(dm, epoch=1, done=3)) == whole[3:]
    assert len(fitting(dm, epoch=1, done=3).train_dataloader()) == 5  # the loop counts the epoch whole


def test_under_ddp_each_rank_takes_its_share_of_the_same_permutation_and_resumes_within_it(tiny_cache):
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    one = sum(train_pairs(fitting(dm, epoch=1)), [])
    shares = [sum(train_pairs(fitting(dm, epoch=1, rank=r, world_size=2)), []) for r in (0, 1)]
    assert shares[0] == one[0::2] and shares[1] == one[1::2]  # 24 pairs: even shares, no padding
    batches = train_pairs(fitting(dm, epoch=1, rank=1, world_size=2))
    assert train_pairs(fitting(dm, epoch=1, done=2, rank=1, world_size=2)) == batches[2:]


def test_without_a_trainer_each_pass_of_the_pair_loader_is_the_next_epoch(tiny_cache):
    dm = PairActivationDataModule(str(tiny_cache["cache"]), batch_size=5)
    loader = dm.train_dataloader()
    passes = [[batch["pair"].tolist() for batch in loader] for _ in range(2)]
    assert passes == [train_pairs(fitting(dm, epoch=e)) for e in (0, 1)]


def token_batches(
    tiny_cache, epoch: int, done: int = 0, rank: int = 0, world_size: int = 1, sequence_fraction: float = 0.0
) -> list[torch.Tensor]:
    dm = TokenActivationDataModule(
        str(tiny_cache["cache"]), batch_size=64, buffer_shards=2, sequence_fraction=sequence_fraction
    )
    return list(fitting(dm, epoch, done, rank, world_size).train_dataloader())


@pytest.mark.parametrize("sequence_fraction", [0.0, 0.25])
def test_a_resumed_token_pass_yields_the_batches_the_killed_pass_had_not_reached(tiny_cache, sequence_fraction):
    """Sequence rows are drawn from the pass's generator too: the skipped batches must still draw theirs."""
    whole = token_batches(tiny_cache, epoch=2, sequence_fraction=sequence_fraction)
    resumed = token_batches(tiny_cache, epoch=2, done=4, sequence_fraction=sequence_fraction)
    assert len(whole) == 11 and len(resumed) == 7
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[4:]))
    assert not torch.equal(token_batches(tiny_cache, epoch=3, sequence_fraction=sequence_fraction)[4], whole[4])


def test_under_ddp_a_resumed_token_pass_skips_this_ranks_batches_only(tiny_cache):
    whole = token_batches(tiny_cache, epoch=1)
    shares = [token_batches(tiny_cache, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(shares[1], whole[1::2]))
    resumed = token_batches(tiny_cache, epoch=1, done=2, rank=1, world_size=2)
    assert len(resumed) == len(shares[1]) - 2 and all(torch.equal(a, b) for a, b in zip(resumed, shares[1][2:]))
