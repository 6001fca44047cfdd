"""TensorBatchLoader: crop/flip against a per-image reference, normalisation, determinism, sharding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from spikemlp.data import DataError, InMemorySplit, TensorBatchLoader, crop_flip


def _split(n=37, c=3, h=8, w=6, seed=0, name=""):
    """Random images; the label of sample i is i, so a batch's labels say which samples it holds."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    return InMemorySplit(images, torch.arange(n), [str(i) for i in range(n)], name=name)


def _raw(loader):
    """All batches of one pass, un-normalised back to uint8 (exact for mean 0, std 1), with labels."""
    xs, ys = [], []
    for x, y in loader:
        xs.append(torch.round(x * 255).to(torch.uint8))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def test_no_augmentation_is_identity_in_order():
    s = _split()
    loader = TensorBatchLoader(s, batch_size=10, mean=(0, 0, 0), std=(1, 1, 1))
    assert len(loader) == 4
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [10, 10, 10, 7]
    assert batches[0][0].dtype == torch.float32
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert torch.equal(y, torch.arange(37))
    torch.testing.assert_close(x, s.images.float() / 255, rtol=0, atol=1e-7)


def test_padding_zero_without_flip_is_identity_even_when_augmenting():
    s = _split()
    images, labels = _raw(
        TensorBatchLoader(s, 8, augment=True, crop_padding=0, flip=False, mean=(0, 0, 0), std=(1, 1, 1))
    )
    assert torch.equal(images, s.images[labels])


def test_normalisation_matches_torchvision():
    s = _split(name="cifar10")
    x, y = next(iter(TensorBatchLoader(s, 37)))  # mean/std from DATASET_INFO["cifar10"]
    ref = TF.normalize(s.images.float() / 255, mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)


def test_crop_flip_against_a_per_image_reference():
    s = _split(n=9, h=7, w=5)
    g = torch.Generator().manual_seed(3)
    p = 3
    offsets = torch.randint(0, 2 * p + 1, (9, 2), generator=g)
    flips = torch.tensor([True, False] * 4 + [True])
    out = crop_flip(s.images, offsets, flips, p)
    for b in range(9):
        padded = F.pad(s.images[b], (p, p, p, p))  # zero padding, as RandomCrop(padding=p)
        oy, ox = offsets[b].tolist()
        window = padded[:, oy : oy + 7, ox : ox + 5]
        ref = torch.flip(window, dims=[-1]) if flips[b] else window
        assert torch.equal(out[b], ref), b


def test_random_crops_are_windows_of_the_padded_image_and_vary():
    s = _split(n=600, h=8, w=8)
    p = 2
    loader = TensorBatchLoader(s, 64, shuffle=True, augment=True, crop_padding=p, mean=(0,) * 3, std=(1,) * 3)
    images, labels = _raw(loader)
    seen = set()
    for img, i in zip(images, labels.tolist(), strict=True):
        padded = F.pad(s.images[i], (p, p, p, p))
        hits = [
            (oy, ox, flip)
            for oy in range(2 * p + 1)
            for ox in range(2 * p + 1)
            for flip in (False, True)
            if torch.equal(
                padded[:, oy : oy + 8, ox : ox + 8].flip(-1) if flip else padded[:, oy : oy + 8, ox : ox + 8],
                img,
            )
        ]
        assert hits, f"sample {i} is neither a window of its padded image nor a mirrored window"
        seen.update(hits)
    assert len(seen) == 2 * (2 * p + 1) ** 2  # every offset occurs, mirrored and not


def test_flip_is_torch_flip_about_half_the_time():
    s = _split(n=2000, h=4, w=4, c=1)
    images, labels = _raw(
        TensorBatchLoader(s, 500, augment=True, crop_padding=0, flip=True, mean=(0,), std=(1,))
    )
    orig = s.images[labels]
    flipped = torch.flip(orig, dims=[-1])
    same = (images == orig).flatten(1).all(1)
    is_flip = (images == flipped).flatten(1).all(1)
    assert bool((same | is_flip).all())
    frac = (is_flip & ~same).sum().item() / 2000  # samples only a flip explains (random images: all flips)
    assert 0.43 < frac < 0.57


def test_deterministic_given_seed_and_epoch():
    s = _split()
    kw = dict(batch_size=8, shuffle=True, augment=True, crop_padding=2, mean=(0,) * 3, std=(1,) * 3)
    a, b = TensorBatchLoader(s, seed=5, **kw), TensorBatchLoader(s, seed=5, **kw)
    e0a, e0b = _raw(a), _raw(b)
    assert torch.equal(e0a[0], e0b[0]) and torch.equal(e0a[1], e0b[1])
    e1 = _raw(a)  # the epoch advances after a pass
    assert not torch.equal(e1[1], e0a[1])
    b.set_epoch(1)
    assert torch.equal(_raw(b)[0], e1[0])
    a.set_epoch(0)
    assert torch.equal(_raw(a)[0], e0a[0])
    other = _raw(TensorBatchLoader(s, seed=6, **kw))
    assert not torch.equal(other[1], e0a[1])
    # a shuffled epoch is a permutation: every sample exactly once
    assert sorted(e1[1].tolist()) == list(range(37))


def test_shards_are_disjoint_equal_slices_of_one_permutation():
    s = _split(n=37)
    full = torch.cat([y for _, y in TensorBatchLoader(s, 5, shuffle=True, seed=9)])
    shards = []
    for rank in range(3):
        loader = TensorBatchLoader(s, 5, shuffle=True, seed=9, rank=rank, world_size=3, drop_last=True)
        assert loader.num_samples == 12 and len(loader) == 2  # 12 samples: 2 full batches of 5
        shards.append(loader.indices(0))
    assert torch.equal(torch.cat(shards), full[:36])  # contiguous slices of the same permutation
    assert len(set(torch.cat(shards).tolist())) == 36  # disjoint


def test_shards_without_drop_last_are_padded_to_equal_length():
    s = _split(n=37)
    got = []
    for rank in range(4):
        loader = TensorBatchLoader(s, 4, shuffle=True, seed=2, rank=rank, world_size=4)
        ys = torch.cat([y for _, y in loader])
        assert ys.numel() == 10 and len(loader) == 3
        got.append(ys)
    all_ = torch.cat(got).tolist()
    assert set(all_) == set(range(37))  # every sample visited; 3 of them twice (40 = 37 + 3)
    assert len(all_) - len(set(all_)) == 3


def test_ranks_draw_different_augmentations():
    s = _split(n=40)
    kw = dict(batch_size=20, shuffle=False, augment=True, mean=(0,) * 3, std=(1,) * 3, world_size=2, seed=1)
    # give both ranks the same images so that only the augmentation can differ
    twin = InMemorySplit(torch.cat([s.images[:20], s.images[:20]]), torch.arange(40), s.classes)
    x0 = _raw(TensorBatchLoader(twin, rank=0, **kw))[0]
    x1 = _raw(TensorBatchLoader(twin, rank=1, **kw))[0]
    assert not torch.equal(x0, x1)


def test_bad_arguments():
    s = _split()
    with pytest.raises(DataError, match=r"rank must be in \[0, world_size\); got rank=2, world_size=2"):
        TensorBatchLoader(s, 4, rank=2, world_size=2)
    with pytest.raises(DataError, match=r"one value per channel \(3\)"):
        TensorBatchLoader(s, 4, mean=(0.5,), std=(0.5,))
    with pytest.raises(DataError, match="batch_size must be at least 1"):
        TensorBatchLoader(s, 0)
    with pytest.raises(DataError, match=r"labels must be int64 \[4\]"):
        InMemorySplit(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ["a"])


def test_batches_are_built_on_the_requested_threads_and_the_setting_restored(monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    real(2)
    try:
        for _ in TensorBatchLoader(_split(n=20), 8, augment=True, threads=1):
            assert torch.get_num_threads() == 2  # the caller's setting between batches
        assert calls == [1, 2] * 3  # 3 batches, each built on one thread
        calls.clear()
        list(TensorBatchLoader(_split(n=20), 8, threads=None))
        assert calls == []
    finally:
        real(before)


@pytest.mark.cuda
def test_cuda_batches_equal_cpu_batches():
    s = _split(n=50)
    kw = dict(batch_size=16, shuffle=True, augment=True, seed=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    for (xc, yc), (xg, yg) in zip(
        TensorBatchLoader(s, **kw), TensorBatchLoader(s, device="cuda", **kw), strict=True
    ):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu(), rtol=1e-6, atol=1e-6)
