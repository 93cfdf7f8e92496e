"""Training, validation and test data come from disjoint seeded streams, whatever the run's shape."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pirecon._validation import SPLITS, _stream_base, make_generator, seed_split, split_seed
from pirecon.data.datasets import SimulationDataset
from pirecon.data.formats import read_ct_raw
from pirecon.data.simulate import simulate
from pirecon.phantoms import random_ellipses


def words(value: int) -> list[int]:
    """The 32-bit words NumPy's SeedSequence reads from a non-negative integer seed, least significant first
    (it pads them with zeros to four before the sample's spawn key)."""
    return [(value >> (32 * k)) & 0xFFFFFFFF for k in range(max(1, (value.bit_length() + 31) // 32))]


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_a_training_seed_never_shares_its_seeding_input_with_a_held_out_split(seed):
    train = words(_stream_base(split_seed(seed, "train")))
    assert len(train) <= 2  # padded with zeros to [lo, hi, 0, 0]
    for name, tag in SPLITS.items():
        if name == "train":
            continue
        held_out = words(_stream_base(split_seed(seed, name)))
        assert held_out[:2] == (train + [0])[:2]  # the same 64-bit seed ...
        assert len(held_out) == 3 and held_out[2] == tag  # ... and the tag: [lo, hi, tag, 0], no training input
        assert seed_split(split_seed(seed, name)) == name
    assert seed_split(split_seed(seed, "train")) == "train"


def test_split_seed_refuses_unknown_splits_and_non_integers():
    with pytest.raises(ValueError, match=r"^split: expected one of 'train', 'validation', 'test', 'calibration', "
                                         r"'panel', found 'held-out'$"):
        split_seed(0, "held-out")
    with pytest.raises(ValueError, match=r"^seed: expected an integer, found 1.5$"):
        split_seed(1.5, "test")


def test_held_out_images_are_none_of_the_training_images():
    shape = (16, 16)
    test = random_ellipses(shape, 20, seed=split_seed(0, "test"))
    validation = random_ellipses(shape, 20, seed=split_seed(0, "validation"))
    training = torch.cat([random_ellipses(shape, 20, seed=0),
                          random_ellipses(shape, 20, seed=0, start_index=1_000_000)])  # where held-out images were
    for held_out in (test, validation):
        assert not any(torch.equal(a, b) for a in held_out for b in training)
    assert not any(torch.equal(a, b) for a in test for b in validation)
    # a split seed also seeds a plain generator (noise of a held-out file), differently from the training seed
    assert not torch.equal(torch.rand(4, generator=make_generator(split_seed(0, "test"))),
                           torch.rand(4, generator=make_generator(0)))


class _Recorder:
    """Stands in for a Simulator: records the seeds it is asked for and returns tiny chunks."""

    def __init__(self):
        self.seeds = []

    def simulate(self, seed, start, count):
        self.seeds.append(seed)
        return {"sinogram": np.zeros((count, 2, 3), np.float32), "ground_truth": np.zeros((count, 2, 2), np.float32)}


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=-(2**70), max_value=2**70), epoch=st.integers(0, 10**9),
       world=st.integers(1, 256), rank_fraction=st.floats(0, 1, exclude_max=True), workers=st.integers(1, 16),
       block=st.integers(1, 64), length=st.one_of(st.none(), st.integers(1, 10**9)), batch=st.integers(1, 64))
def test_no_training_stream_reaches_a_held_out_split(seed, epoch, world, rank_fraction, workers, block, length,
                                                     batch):
    """Any seed (a held-out split's seed included), epoch, rank, world size, worker count, block size, length
    and batch size: every sample a training dataset simulates is drawn from the training split."""
    rank = int(rank_fraction * world)
    dataset = SimulationDataset("ct", "ellipses", seed=seed, length=length,
                                block_size=block, rank=rank, world_size=world, image_size=8)
    dataset.simulator = recorder = _Recorder()
    dataset.set_epoch(epoch)
    dataset.resume_after(3, batch)
    for worker in range(min(workers, 3)):
        samples = dataset._samples(worker, workers, 0)
        for _ in range(2 * block):
            if next(samples, None) is None:
                break
    assert recorder.seeds and all(seed_split(s) == "train" for s in recorder.seeds)


def test_a_dataset_given_a_held_out_seed_still_draws_training_images():
    held_out_seed = split_seed(0, "test")
    dataset = SimulationDataset("ct", "ellipses", seed=held_out_seed, length=4, rank=0, world_size=1, image_size=16,
                                noise="none")
    truths = torch.stack([item["ground_truth"] for item in dataset])
    assert torch.equal(truths, random_ellipses((16, 16), 4, seed=0))
    assert not torch.equal(truths, random_ellipses((16, 16), 4, seed=held_out_seed))


def test_simulated_files_record_their_split_and_held_out_files_differ(tmp_path):
    train = simulate(tmp_path / "train.h5", n=3, seed=0, image_size=16, progress=False)
    test = simulate(tmp_path / "test.h5", n=3, seed=0, image_size=16, split="test", progress=False)
    a, b = read_ct_raw(train), read_ct_raw(test)
    assert a.attrs["split"] == "train" and b.attrs["split"] == "test"
    assert not any(np.array_equal(x, y) for x in a.ground_truth for y in b.ground_truth)
    assert np.array_equal(b.ground_truth[:, None], random_ellipses((16, 16), 3, seed=split_seed(0, "test")).numpy())
