"""cached_images (parallel decode, one error for all bad files, disk cache) and tf_batches (shapes, shuffling)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylib import pipeline
from xraylib.errors import InputError
from xraylib.images import load_gray
from xraylib.pipeline import (
    balanced_draw,
    batch_sizes,
    cache_file,
    cached_images,
    decode_images,
    resolve_cache_dir,
    tf_batches,
)


def _images(folder, n: int = 12) -> list[str]:
    """n small images of mixed kinds (gray/RGB JPEG, gray/16-bit/RGBA PNG), each with a distinct brightness."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        level = 10 + 20 * i
        base = np.full((30 + i, 40), level, np.uint8)
        kind = i % 4
        if kind == 0:
            path, im = folder / f"img{i:02d}.jpeg", Image.fromarray(base)
        elif kind == 1:
            path, im = folder / f"img{i:02d}.jpg", Image.fromarray(np.dstack([base] * 3))
        elif kind == 2:
            path, im = folder / f"img{i:02d}.png", Image.fromarray(base.astype(np.uint16) * 257)
        else:
            path, im = folder / f"img{i:02d}.png", Image.fromarray(np.dstack([base] * 3 + [np.full_like(base, 255)]))
        im.save(path)
        paths.append(str(path))
    return paths


def test_cached_images_shape_values_and_order(tmp_path):
    paths = _images(tmp_path / "img")
    out = cached_images(paths, 16, cache_dir="none")
    assert out.shape == (len(paths), 16, 16, 1) and out.dtype == np.uint8
    for i, p in enumerate(paths):  # same result as the single-image decoder, in the given order
        np.testing.assert_array_equal(out[i, :, :, 0], load_gray(p, 16))
        assert abs(int(out[i].mean()) - (10 + 20 * i)) <= 2


def test_cached_images_reports_every_bad_file_in_one_error(tmp_path):
    paths = _images(tmp_path / "img", 6)
    bad = tmp_path / "img"
    (bad / "empty.jpeg").write_bytes(b"")
    (bad / "notes.jpeg").write_text("not an image")
    data = Path(paths[0]).read_bytes()
    (bad / "cut.jpeg").write_bytes(data[: len(data) // 2])
    broken = [str(bad / "empty.jpeg"), str(bad / "notes.jpeg"), str(bad / "cut.jpeg"), str(bad / "gone.png")]
    everything = paths[:3] + broken[:2] + paths[3:] + broken[2:]
    with pytest.raises(InputError) as info:
        cached_images(everything, 16, cache_dir=tmp_path / "cache", key="abc")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"4 of {len(everything)} image files cannot be decoded")
    for name in ("empty.jpeg", "notes.jpeg", "cut.jpeg", "gone.png"):
        assert name in message
    assert "img00" not in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing cached


def test_many_bad_files_shows_count_and_first_names(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    paths = []
    for i in range(9):
        (folder / f"b{i}.jpeg").write_bytes(b"")
        paths.append(str(folder / f"b{i}.jpeg"))
    with pytest.raises(InputError, match=r"^9 of 9 .*b0\.jpeg.*b4\.jpeg.*and 4 more") as info:
        cached_images(paths, 8, cache_dir="none")
    assert "b5.jpeg" not in str(info.value)


def test_a_bad_file_named_without_its_folder_is_placed_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.png").write_text("not an image")
    with pytest.raises(InputError, match=f"cannot be decoded \\(in {re.escape(str(tmp_path))}\\): notes.png"):
        decode_images(["notes.png"], 16, on_error="raise")


@pytest.mark.parametrize("workers", [1, 2])
def test_decode_images_raises_or_collects_as_the_caller_chooses(tmp_path, workers):
    paths = _images(tmp_path / "img", 5)
    (tmp_path / "img" / "empty.jpeg").write_bytes(b"")
    (tmp_path / "img" / "notes.png").write_text("not an image")
    everything = paths[:2] + [str(tmp_path / "img" / "empty.jpeg")] + paths[2:] + [str(tmp_path / "img" / "notes.png")]
    with pytest.raises(InputError, match=r"^2 of 7 image files cannot be decoded .*empty\.jpeg.*notes\.png"):
        decode_images(everything, 16, on_error="raise", workers=workers)
    images, errors = decode_images(everything, 16, on_error="collect", workers=workers)
    assert images.shape == (7, 16, 16, 1) and images.dtype == np.uint8
    assert errors[2] == "the file is empty (0 bytes)" and "not an image" in errors[6]
    assert [i for i, e in enumerate(errors) if e] == [2, 6]
    assert not images[2].any() and not images[6].any()  # a bad file leaves a zero image
    good = [i for i, e in enumerate(errors) if not e]
    for i in good:  # the good files decode as if alone, in the given order
        np.testing.assert_array_equal(images[i, :, :, 0], load_gray(everything[i], 16))
    clean, clean_errors = decode_images(paths, 16, on_error="raise", workers=workers)
    np.testing.assert_array_equal(clean, images[good])
    assert clean_errors == [""] * len(paths)
    with pytest.raises(InputError, match="on_error='skip'"):
        decode_images(paths, 16, on_error="skip")


def test_disk_cache_hit_and_misses(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 8)
    cache = tmp_path / "cache"
    first = cached_images(paths, 16, cache_dir=cache, key="fp1")
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob("*.part"))
    assert files[0].stat().st_size > first.nbytes  # header + data

    calls = []
    real = pipeline.load_gray
    monkeypatch.setattr(pipeline, "load_gray", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = cached_images(paths, 16, cache_dir=cache, key="fp1")
    assert calls == []  # a hit: nothing decoded
    np.testing.assert_array_equal(again, first)

    other_size = cached_images(paths, 20, cache_dir=cache, key="fp1")
    assert other_size.shape[1:3] == (20, 20) and len(calls) == len(paths)
    calls.clear()
    cached_images(paths, 16, cache_dir=cache, key="fp2")  # another index fingerprint
    assert len(calls) == len(paths)
    calls.clear()
    cached_images(paths[:-1], 16, cache_dir=cache, key="fp1")  # another file list under the same key
    assert len(calls) == len(paths) - 1
    assert len(list(cache.glob("*.npy"))) == 4


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    paths = _images(tmp_path / "img", 4)
    cache = tmp_path / "cache"
    first = cached_images(paths, 16, cache_dir=cache, key="k")
    target = cache_file(paths, 16, cache, "k")
    target.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring"):
        again = cached_images(paths, 16, cache_dir=cache, key="k")
    np.testing.assert_array_equal(again, first)
    assert np.load(target).shape == (4, 16, 16, 1)


def test_cache_follows_file_content_not_names(tmp_path):
    """Files rewritten in place (same names, same sizes) and a right-shaped cache of zeros are both decoded again."""
    import os

    paths = _images(tmp_path / "img", 4)
    cache = tmp_path / "cache"
    first = cached_images(paths, 16, cache_dir=cache, key="k")
    target = cache_file(paths, 16, cache, "k")
    np.save(target, np.zeros_like(first))  # right shape and dtype, wrong content
    with pytest.warns(UserWarning, match="checksum"):
        np.testing.assert_array_equal(cached_images(paths, 16, cache_dir=cache, key="k"), first)
    brighter = np.full((30, 40), 250, np.uint8)
    Image.fromarray(brighter).save(paths[0])  # same name, new content (and a new modification time)
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_file(paths, 16, cache, "k") != target
    again = cached_images(paths, 16, cache_dir=cache, key="k")
    assert again[0].mean() > first[0].mean() + 100 and np.array_equal(again[1:], first[1:])


def test_no_disk_cache_without_key_or_with_none(tmp_path):
    paths = _images(tmp_path / "img", 3)
    cached_images(paths, 8, cache_dir=tmp_path / "c1", key=None)
    cached_images(paths, 8, cache_dir="none", key="k")
    assert not (tmp_path / "c1").exists()


def test_resolve_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XRAYLIB_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir("auto") == tmp_path / "env"
    monkeypatch.setenv("XRAYLIB_CACHE", "none")
    assert resolve_cache_dir("auto") is None
    monkeypatch.delenv("XRAYLIB_CACHE")
    assert resolve_cache_dir("auto") == Path.home() / ".cache" / "xraylib"
    assert resolve_cache_dir("none") is None and resolve_cache_dir(tmp_path) == tmp_path


def test_real_samples_through_cache(shared_data, tmp_path):
    folder = shared_data / "samples" / "coronahack-test"
    paths = sorted(str(p) for p in folder.iterdir())
    out = cached_images(paths, 150, cache_dir=tmp_path, key="samples")
    assert out.shape == (10, 150, 150, 1) and out.dtype == np.uint8
    assert (out.reshape(10, -1).std(axis=1) > 20).all()


# -------------------------------------------------------------------------------------------------- datasets


def _arrays(n: int = 10, size: int = 4):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, size, size, 1), np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)
    return images, labels


def _epoch(ds) -> tuple[list[int], list[float]]:
    ids, ys = [], []
    for x, y in ds:
        ids += [int(v) for v in x[:, 0, 0, 0].numpy()]
        ys += [float(v) for v in y.numpy()]
    return ids, ys


def test_tf_batches_shapes_and_dtypes():
    import tensorflow as tf

    images, labels = _arrays(10)
    ds = tf_batches(images, labels, batch_size=4, shuffle=False, seed=0)
    spec_x, spec_y = ds.element_spec
    assert spec_x.dtype == tf.float32 and spec_y.dtype == tf.float32
    batches = list(ds)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    assert [tuple(y.shape) for _, y in batches] == [(4,), (4,), (2,)]
    x0 = batches[0][0].numpy()
    assert x0.min() >= 0 and x0.max() <= 255
    full = np.full((2, 3, 3, 1), 255, np.uint8)
    (x, _), *_ = list(tf_batches(full, [1, 0], 2, shuffle=False, seed=0))
    assert float(x.numpy().max()) == 255.0  # [0, 255], not rescaled


def test_unshuffled_keeps_order_every_epoch():
    images, labels = _arrays(10)
    ds = tf_batches(images, labels, batch_size=3, shuffle=False, seed=5)
    for _ in range(2):
        ids, ys = _epoch(ds)
        assert ids == list(range(10)) and ys == [float(i % 2) for i in range(10)]


def _epochs(ds, n_epochs: int, batches_per_epoch: int) -> list[tuple[list[int], list[float]]]:
    """Split the first epochs of an endless training stream into (ids, labels) per epoch."""
    out = []
    stream = iter(ds)
    for _ in range(n_epochs):
        ids, ys = [], []
        for _ in range(batches_per_epoch):
            x, y = next(stream)
            ids += [int(v) for v in x.numpy()[:, 0, 0, 0]]
            ys += [float(v) for v in y.numpy()]
        out.append((ids, ys))
    return out


def test_seeded_shuffle_reproducible_and_reshuffled_each_epoch():
    images, labels = _arrays(60)  # 60 / 8: the last batch of each epoch is short, epochs never mix
    (a1, ya), (a2, _) = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=7), 2, 8)
    (b1, _), (b2, _) = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=7), 2, 8)
    (c1, _), _ = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=8), 2, 8)
    assert a1 == b1 and a2 == b2  # same seed, same sequence of epochs
    assert a1 != a2  # reshuffled each epoch
    assert sorted(a1) == list(range(60)) and sorted(a2) == list(range(60))  # every image once per epoch
    assert c1 != a1
    assert all(float(i % 2) == y for i, y in zip(a1, ya, strict=True))  # labels stay with their images


def test_resumed_stream_sees_the_same_epochs():
    images, labels = _arrays(30)
    whole = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=3), 3, 4)
    resumed = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=3, first_epoch=2), 1, 4)
    assert resumed[0] == whole[2]


def _skewed(n: int = 100):
    """n images whose value is their index, the first tenth normal (0) and the rest pneumonia (1)."""
    images, _ = _arrays(n)
    return images, (np.arange(n) >= n // 10).astype(np.int64)


def test_balanced_draw_gives_each_class_the_same_share_on_average():
    images, labels = _skewed()
    draw = balanced_draw(labels)
    assert draw.sum() == pytest.approx(1.0) and draw[0] == pytest.approx(9 * draw[-1])
    epochs = _epochs(tf_batches(images, labels, 10, shuffle=True, seed=4, draw=draw), 4, 10)
    shuffled = _epochs(tf_batches(images, labels, 10, shuffle=True, seed=4), 4, 10)
    normal_share = np.mean([y == 0 for _, ys in epochs for y in ys])
    assert 0.4 < normal_share < 0.6  # 400 draws; each image once an epoch would give 0.1
    assert np.mean([y == 0 for _, ys in shuffled for y in ys]) == pytest.approx(0.1)
    ids = [i for epoch_ids, _ in epochs for i in epoch_ids]
    assert len(set(ids)) < len(ids) and len(set(epochs[0][0])) < 100  # drawn with replacement
    assert all(float(labels[i]) == y for epoch_ids, ys in epochs for i, y in zip(epoch_ids, ys, strict=True))
    assert epochs[0] != epochs[1]  # a new draw each epoch


def test_balanced_stream_is_reproducible_and_resumes_where_it_stopped():
    images, labels = _skewed(60)
    draw = balanced_draw(labels)
    whole = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=3, draw=draw), 3, 8)
    again = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=3, draw=draw), 3, 8)
    resumed = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=3, first_epoch=2, draw=draw), 1, 8)
    other = _epochs(tf_batches(images, labels, 8, shuffle=True, seed=5, draw=draw), 1, 8)
    assert whole == again and resumed[0] == whole[2] and other[0] != whole[0]


def test_a_draw_that_does_not_fit_the_images_is_one_line():
    images, labels = _skewed(20)
    for draw in (balanced_draw(labels)[:5], np.zeros(20), np.full(20, np.inf)):
        with pytest.raises(InputError, match="draw: expected 20 finite, non-negative probabilities"):
            tf_batches(images, labels, 4, shuffle=True, draw=draw)
    with pytest.raises(InputError, match="draw: only a shuffled stream"):
        tf_batches(images, labels, 4, shuffle=False, draw=balanced_draw(labels))


@pytest.mark.parametrize(("n", "batch", "replicas"), [(9, 8, 2), (41, 8, 2), (25, 8, 4), (40, 6, 1), (17, 16, 2)])
def test_no_batch_leaves_a_replica_empty(n, batch, replicas):
    sizes = batch_sizes(n, batch, replicas)
    assert sum(sizes) == n and len(sizes) == -(-n // batch) and max(sizes) <= batch
    assert min(sizes) >= replicas  # tf.distribute splits a batch evenly: each replica gets at least one image
    if replicas == 1:
        assert sizes == [batch] * (n // batch) + [n % batch] * bool(n % batch)  # one device: batches as before
    images, labels = _arrays(n)
    for shuffle in (False, True):
        stream = tf_batches(images, labels, batch, shuffle=shuffle, seed=1, replicas=replicas)
        seen = [int(x.shape[0]) for x, _ in stream.take(len(sizes))]
        assert seen == sizes


def test_too_few_images_for_the_replicas_is_one_line():
    with pytest.raises(InputError, match="3 images cannot be spread over 4 replicas"):
        batch_sizes(3, 8, 4)


def test_tf_batches_rejects_mismatch():
    images, labels = _arrays(5)
    with pytest.raises(InputError, match="labels"):
        tf_batches(images, labels[:3], 2, shuffle=False, seed=0)
