"""The benchmark's printed table."""

from xraylib.bench import FULL_DATASET, format_bench, format_bench_predict


def test_format_bench_prints_every_figure():
    result = {
        "images": 600,
        "image_size": 150,
        "backbone": "resnet34",
        "batch_size": 32,
        "decode_workers": 2,
        "cpu_cores": 2,
        "cold_decode_seconds": 2.5,
        "cold_decode_images_per_s": 240.0,
        "cold_decode_cpu_ms_per_image": 7.9,
        "cached_images_per_s": 20000.0,
        "cached_augmented_images_per_s": 2100.0,
        "model_only_images_per_s": 10.0,
        "end_to_end_images_per_s": 9.8,
        "end_to_end_vs_model_only": 0.98,
        "graph_build_seconds": 12.0,
        "graph_build_seconds_end_to_end": 13.0,
        "cache_mb": 13.5,
        "cache_mb_full_dataset_224px": 296.6,
        "peak_rss_mb": 2000.0,
        "notes": ["a note"],
    }
    text = format_bench(result)
    for fragment in ("240.0 images/s", "2,100.0 images/s", "0.980", "296.6 MB", "2,000.0 MB", "a note"):
        assert fragment in text


def test_cache_size_statement():
    # uint8, one channel: the full 5,910-image dataset at 224 px is 297 MB, far under 1 GB
    assert FULL_DATASET * 224 * 224 == 296_540_160 < 1e9


def test_bench_predict_measures_both_rates(tmp_path):
    import keras
    import numpy as np
    from PIL import Image

    from xraylib.bench import bench_predict

    image = keras.Input((32, 32, 1), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="conv")(image))
    keras.Model(image, keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(x)).save(tmp_path / "model.keras")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((300, 200), 20 * i, np.uint8)).save(folder / f"x{i}.jpeg")
    result = bench_predict(tmp_path / "model.keras", [folder], repeats=1)
    assert result["images"] == 6 and result["image_size"] == 32
    assert result["predict_images_per_s"] > 0 and result["pipeline_cold_decode_images_per_s"] > 0
    assert result["model_only_images_per_s"] > 0 and result["decode_cpu_ms_per_image"] > 0
    assert 0 < result["predict_vs_decode_cpu_bound_ceiling"] <= 1
    text = format_bench_predict(result)
    for fragment in ("6 images at 32 px", "cold decode", "the model alone", "when the cores are the limit"):
        assert fragment in text


def test_bench_train_measures_the_trunk_the_top_and_the_whole_model(capsys):
    import json
    import math

    import keras

    from xraylib.bench import format_bench_train
    from xraylib.cli import main

    settings = ["image_size=32", "fine_tune=17", "batch_size=4", "augment=false"]
    args = ["bench", "train", "--backbone", "resnet34", "--precision", "float32,bfloat16", "--batches", "1", "--json"]
    assert main(args + [x for s in settings for x in ("--set", s)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cpu"] and isinstance(result["amx_bf16"], bool) and result["notes"] == []
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert set(result["precisions"]) == {"float32", "mixed_bfloat16"}
    for figures in result["precisions"].values():
        assert figures["trunk_output"].startswith("conv5_block1_out")  # a block boundary below the top 17 layers
        for what in ("trunk", "top_train", "end_to_end_train"):
            rate = figures[f"{what}_images_per_s"]
            assert math.isfinite(rate) and rate > 0, what
    text = format_bench_train(result)
    for fragment in ("resnet34 at 32 px, fine_tune=17", result["cpu"], "mixed_bfloat16", "top / end to end"):
        assert fragment in text
    assert main(["bench", "train", "--precision", "float16"]) == 2


def test_bench_pipeline_refuses_an_image_size_that_cannot_fit_in_memory_in_one_line(tmp_path, capsys):
    from PIL import Image

    from xraylib.cli import main

    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / label).mkdir()
        for i in range(8):
            Image.new("L", (16, 16), 100).save(tmp_path / label / f"{label}-{i}.jpeg")
    assert main(["bench", "pipeline", "--data", str(tmp_path), "--image-size", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "image_size=100000" in err and "memory" in err and len(err.splitlines()) == 1


def test_bench_predict_refuses_fewer_than_one_repeat(tmp_path, capsys):
    from xraylib.cli import main

    for repeats in ("0", "-1"):
        assert main(["bench", "predict", str(tmp_path / "model.keras"), str(tmp_path), "--repeats", repeats]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--repeats {repeats}: must be at least 1" in err and len(err.splitlines()) == 1
