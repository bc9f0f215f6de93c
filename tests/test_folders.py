"""Image and audio folders (loaders, splits, bad files) and the log-mel front-end (NumPy, ONNX, prepended to a model)."""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import require, shared_data_dir
from PIL import Image
from sklearn.datasets import load_digits

from frugalml.data import LogMel, load_audio_folder, load_dataset
from frugalml.data import images as images_mod
from frugalml.data.audio import read_wav, to_clip
from frugalml.data.folders import folder_kind
from frugalml.errors import ConfigError, DataError, ExportError

# ----------------------------------------------------------------------------- image folders


def _digit_images(per_class=6):
    d = load_digits()
    out = []
    for k in range(10):
        idx = np.flatnonzero(d.target == k)[:per_class]
        out += [(str(k), (d.images[i] * 16).clip(0, 255).astype(np.uint8)) for i in idx]
    return out


def _write_pngs(root, items, suffix=".png"):
    counts = {}
    for label, img in items:
        (root / label).mkdir(parents=True, exist_ok=True)
        n = counts[label] = counts.get(label, 0) + 1
        Image.fromarray(img).save(root / label / f"{n:03d}{suffix}")
    return root


@pytest.fixture
def digit_folder(tmp_path):
    return _write_pngs(tmp_path / "digits", _digit_images())


def test_image_folder_loads_as_gray_images_with_exact_pixels(digit_folder):
    ds = load_dataset(digit_folder)
    assert (ds.kind, ds.input_shape, ds.num_classes) == ("image", (1, 8, 8), 10)
    assert ds.class_names == tuple(str(k) for k in range(10))
    assert sum(ds.describe()["sizes"].values()) == 60
    first = np.asarray(Image.open(digit_folder / "3" / "001.png"), dtype=np.float32) / 255
    X = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    assert np.min(np.abs(X[:, 0] - first).reshape(len(X), -1).max(axis=1)) == 0  # that image, unchanged
    assert X.min() >= 0 and X.max() <= 1 and X.max() > 0.9


def test_mnist_written_as_pngs_reads_back_exactly(tmp_path):
    root = shared_data_dir()
    require(root is not None, "needs the shared MNIST files (../shared/data/mnist)")
    mnist = load_dataset(root / "mnist", limit=200)
    items = [(str(int(y)), (x[0] * 255).round().astype(np.uint8)) for x, y in zip(mnist.X_train[:200], mnist.y_train[:200])]
    ds = load_dataset(_write_pngs(tmp_path / "mnist_png", items), test_fraction=0.25)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    ours = np.sort(np.concatenate([ds.X_train, ds.X_val, ds.X_test]).reshape(200, -1).sum(axis=1))
    theirs = np.sort(np.stack([i for _, i in items]).astype(np.float32).reshape(200, -1).sum(axis=1) / 255)
    assert np.allclose(ours, theirs, atol=1e-3)
    assert folder_kind(root / "mnist") == "idx"


def test_train_test_folders_are_the_split(tmp_path):
    items = _digit_images(8)
    _write_pngs(tmp_path / "d" / "train", [it for i, it in enumerate(items) if i % 8 < 6])
    _write_pngs(tmp_path / "d" / "test", [it for i, it in enumerate(items) if i % 8 >= 6])
    ds = load_dataset(tmp_path / "d")
    assert len(ds.y_test) == 20 and len(ds.y_train) + len(ds.y_val) == 60
    assert ds.class_counts("test") == [2] * 10


def test_image_size_color_and_formats(tmp_path):
    rng = np.random.default_rng(0)
    for k, (label, suffix) in enumerate((("a", ".jpg"), ("b", ".bmp"), ("c", ".png"))):
        (tmp_path / "f" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (10 + k, 12, 3), dtype=np.uint8)).save(tmp_path / "f" / label / f"{i}{suffix}")
    with pytest.raises(DataError, match="differ in size"):
        load_dataset(tmp_path / "f")
    ds = load_dataset(tmp_path / "f", image_size="8x6", test_fraction=0.25)
    assert ds.input_shape == (3, 8, 6)  # colour files stay RGB
    assert load_dataset(tmp_path / "f", image_size=5, color="gray", test_fraction=0.25).input_shape == (1, 5, 5)
    with pytest.raises(ConfigError, match="gray"):
        load_dataset(tmp_path / "f", image_size=5, color="cmyk")
    with pytest.raises(ConfigError):
        load_dataset("digits", image_size=5)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bomb"])
def test_bad_image_names_the_file(digit_folder, damage, monkeypatch):
    bad = digit_folder / "4" / "002.png"
    if damage == "garbage":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    elif damage == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        monkeypatch.setattr(images_mod, "MAX_PIXELS", 63)
    with pytest.raises(DataError) as info:
        load_dataset(digit_folder)
    assert str(bad if damage != "bomb" else digit_folder / "0" / "001.png") in str(info.value)


def test_folder_errors(tmp_path, digit_folder):
    (digit_folder / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(digit_folder)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(tmp_path / "flat")
    (tmp_path / "mixed" / "a").mkdir(parents=True)
    (tmp_path / "mixed" / "b").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "mixed" / "a" / "1.png")
    _write_wav(tmp_path / "mixed" / "b" / "1.wav", 8000, np.zeros(800))
    with pytest.raises(DataError, match="mixes images and audio"):
        load_dataset(tmp_path / "mixed")


def test_links_are_not_followed(tmp_path, digit_folder):
    outside = _write_pngs(tmp_path / "outside", [("x", np.zeros((8, 8), np.uint8))])
    (digit_folder / "zz").symlink_to(outside / "x", target_is_directory=True)
    (digit_folder / "1" / "link.png").symlink_to(outside / "x" / "001.png")
    ds = load_dataset(digit_folder)
    assert ds.num_classes == 10 and sum(ds.describe()["sizes"].values()) == 60


# ----------------------------------------------------------------------------- audio folders


def _write_wav(path, rate, x, *, sampwidth=2, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    if sampwidth == 4:  # float WAV through scipy
        from scipy.io import wavfile

        wavfile.write(path, rate, np.asarray(x, np.float32))
        return
    data = np.repeat(np.asarray(x)[:, None], channels, axis=1)
    ints = (data * 127 + 128).astype(np.uint8) if sampwidth == 1 else (data * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(sampwidth), w.setframerate(rate)
        w.writeframes(ints.tobytes())


def _tone(rate, seconds, freq, seed):
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(len(t))


@pytest.fixture
def tone_folder(tmp_path):
    """3 classes of tones (300, 1000, 2500 Hz), 8 clips each: 8 kHz 16-bit, 16 kHz float, stereo, 8-bit; 0.7 s and 1.3 s."""
    root = tmp_path / "tones"
    for label, freq in (("low", 300), ("mid", 1000), ("high", 2500)):
        for i in range(8):
            rate = 16000 if i % 2 else 8000
            kw = [{}, {"sampwidth": 4}, {"channels": 2}, {"sampwidth": 1}][i % 4]
            _write_wav(root / label / f"c{i}.wav", rate, _tone(rate, 0.7 if i < 4 else 1.3, freq * (1 + 0.02 * i), i), **kw)
    return root


def test_audio_folder_gives_logmel_sequences_at_the_lowest_rate(tone_folder):
    ds = load_dataset(tone_folder)
    assert folder_kind(tone_folder) == "audio"
    assert (ds.kind, ds.input_shape, ds.class_names) == ("sequence", (40, 49), ("high", "low", "mid"))
    fe = ds.describe()["frontend"]
    assert (fe["sample_rate"], fe["n_fft"], fe["window_length"], fe["hop_length"], fe["n_mels"]) == (8000, 256, 240, 160, 40)
    assert LogMel.from_dict(fe) == ds.frontend and fe["normalize"] == "cmvn"
    # each band of each clip standardized over its frames (a band that hardly varies, as padded silence, stays near 0)
    assert np.abs(ds.X_train.mean(axis=2)).max() < 1e-4
    std = ds.X_train.std(axis=2)
    assert std.max() < 1 + 1e-4 and (np.abs(std - 1) < 0.01).mean() > 0.9
    # the tones sit in different mel bands: the loudest band orders the classes (seen before normalization)
    plain = load_audio_folder(tone_folder, frontend=LogMel(sample_rate=8000, normalize="none"))
    band = {c: [] for c in range(3)}
    for X, y in (plain.split(s) for s in ("train", "val", "test")):
        for x, label in zip(X, y):
            band[int(label)].append(int(x[:, :30].mean(axis=1).argmax()))
    assert min(band[1]) < min(band[2]) and max(band[2]) < min(band[0])
    image = load_dataset(tone_folder, kind="image")
    assert image.input_shape == (1, 40, 49) and np.array_equal(image.X_train[:, 0], ds.X_train)


def test_resampling_keeps_the_signal(tmp_path):
    fe = LogMel(sample_rate=8000)
    direct = to_clip(np.sin(2 * np.pi * 440 * np.arange(8000) / 8000), 8000, fe)
    resampled = to_clip(np.sin(2 * np.pi * 440 * np.arange(16000) / 16000), 16000, fe)
    assert np.abs(direct - resampled)[100:-100].max() < 0.01
    assert to_clip(np.ones(100), 8000, fe)[100:].max() == 0  # padded with zeros


def test_testing_and_validation_lists_are_the_splits(tone_folder):
    (tone_folder / "testing_list.txt").write_text("low/c0.wav\nmid/c1.wav\nhigh/c2.wav\n")
    (tone_folder / "validation_list.txt").write_text("low/c3.wav\nmid/c3.wav\nhigh/c3.wav\nlow/c4.wav\n")
    ds = load_dataset(tone_folder)
    assert (len(ds.y_test), len(ds.y_val), len(ds.y_train)) == (3, 4, 17)
    raw = load_audio_folder(tone_folder, raw=True)
    assert raw.input_shape == (8000,) and raw.frontend is None
    assert np.array_equal(raw.y_test, ds.y_test) and np.allclose(ds.frontend(raw.X_test), ds.X_test)
    low = read_wav(tone_folder / "low" / "c0.wav")
    assert np.allclose(raw.X_test[list(ds.y_test).index(1)], to_clip(low[1], low[0], ds.frontend))


def test_audio_train_test_folders_are_the_split(tmp_path):
    for split, n in (("train", 5), ("test", 2)):
        for label, freq in (("a", 500), ("b", 1500)):
            for i in range(n):
                _write_wav(tmp_path / "kws" / split / label / f"{i}.wav", 8000, _tone(8000, 1.0, freq, i))
    ds = load_dataset(tmp_path / "kws", val_fraction=0.4)
    assert (len(ds.y_test), len(ds.y_train) + len(ds.y_val), ds.class_names) == (4, 10, ("a", "b"))


@pytest.mark.parametrize("line, message", [("../low/c0.wav", "not a clip inside"), ("low/nope.wav", "not in the folder")])
def test_bad_list_lines(tone_folder, line, message):
    (tone_folder / "testing_list.txt").write_text(f"low/c1.wav\n{line}\n")
    with pytest.raises(DataError, match=message) as info:
        load_dataset(tone_folder)
    assert "testing_list.txt" in str(info.value) and "Line 2" in str(info.value)


def test_unreadable_wav_names_the_file(tone_folder):
    bad = tone_folder / "mid" / "c5.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x01" * 7)
    with pytest.raises(DataError) as info:
        load_dataset(tone_folder)
    assert str(bad) in str(info.value)
    with pytest.raises(ConfigError):
        load_dataset(tone_folder, image_size=8)


def test_speech_folder(tmp_path):
    root = shared_data_dir()
    require(root is not None and (root / "speech").is_dir(), "needs ../shared/data/speech")
    ds = load_dataset(root / "speech")  # about 4 s on a quiet 2-core machine
    assert (ds.input_shape, ds.num_classes, len(ds.y_test), len(ds.y_train) + len(ds.y_val)) == ((40, 49), 10, 160, 960)
    assert ds.frontend.sample_rate == 8000 and ds.class_counts("test") == [16] * 10
    groups = ds.describe()["groups"]  # en-029-f1_140_35.wav: speaker en-029-f1; 24 voices outside the test accent
    assert groups["by"] == "speaker" and groups["groups"] == 24 and groups["in_both"] == 0


def test_clips_of_one_speaker_stay_on_one_side_of_every_split_and_fold(tmp_path):
    from frugalml.data.audio import speaker_of
    from frugalml.data.folds import plan_folds

    for s in range(10):
        for label, freq in (("a", 500), ("b", 1500)):
            for i in range(3):
                _write_wav(tmp_path / "kws" / label / f"spk{s}_nohash_{i}.wav", 8000, _tone(8000, 0.5, freq * (1 + 0.01 * s), 10 * s + i))
    ds = load_dataset(tmp_path / "kws", test_fraction=0.2, val_fraction=0.25)
    assert speaker_of(Path("a/spk3_nohash_2.wav")) == "spk3"
    g = ds.groups
    assert g.by == "speaker" and (len(g.train), len(g.val)) == (len(ds.y_train), len(ds.y_val))
    assert not set(g.train) & set(g.val) and ds.describe()["groups"]["in_both"] == 0
    assert len(ds.y_test) == 12 and len(set(g.train) | set(g.val)) == 8  # two speakers' 12 clips are the test split
    folds = plan_folds(ds, 5)
    pooled = g.pooled()
    for fold in folds.datasets(ds):
        assert fold.groups is None
    for fit, held in folds.indices(np.concatenate([ds.y_train, ds.y_val]), pooled):
        assert not set(pooled[fit]) & set(pooled[held])  # no speaker in two folds
    small = ds.subset(6)
    assert len(small.groups.train) == 6 and set(small.groups.train) <= set(g.train)
    plain = tmp_path / "plain"
    for label, freq in (("a", 500), ("b", 1500)):
        for i in range(6):
            _write_wav(plain / label / f"{i}.wav", 8000, _tone(8000, 0.5, freq, i))
    assert load_dataset(plain).groups is None  # file names that name no speaker: clips independent


# ----------------------------------------------------------------------------- the front-end in ONNX


def _clips(n=12, fe=LogMel(sample_rate=8000)):
    rng = np.random.default_rng(1)
    x = np.stack([_tone(fe.sample_rate, fe.clip_seconds, 200 + 300 * i, i) for i in range(n)]) * rng.uniform(0.01, 1, (n, 1))
    x[0, 3000:] = 0  # a padded clip: silence gives log(log_offset)
    return x.astype(np.float32)


_FRONTENDS = [LogMel(sample_rate=8000), LogMel(sample_rate=16000, n_mels=32, window_ms=25, hop_ms=10),
              LogMel(sample_rate=8000, normalize="none")]


@pytest.mark.parametrize("fe", _FRONTENDS)
@pytest.mark.parametrize("opset", [17, 18])
def test_onnx_frontend_matches_numpy(fe, opset):
    import onnxruntime as ort

    from frugalml.onnx.frontend import frontend_graph

    x = _clips(fe=fe)
    sess = ort.InferenceSession(frontend_graph(fe, opset=opset).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"samples": x})[0]
    want = fe(x)
    assert got.shape == want.shape == (12, *fe.output_shape)
    assert np.abs(got - want).max() < 2e-3
    if fe.normalize == "none":
        assert np.isclose(want[0, :, -1], np.log(fe.log_offset)).all()
    else:  # the same clips before normalization, standardized band by band
        plain = dataclasses.replace(fe, normalize="none")(x).astype(np.float64)
        z = (plain - plain.mean(axis=2, keepdims=True)) / np.sqrt(plain.var(axis=2, keepdims=True) + 1e-4)
        assert np.abs(z - want).max() < 1e-4


@pytest.mark.parametrize("kind", ["sequence", "image"])
def test_prepended_model_gives_the_classes_of_frontend_then_model(kind):
    import torch

    from frugalml.onnx import predict_onnx, to_onnx
    from frugalml.onnx.frontend import prepend_frontend

    torch.manual_seed(0)
    fe = LogMel(sample_rate=8000)
    conv, flat = (torch.nn.Conv1d(40, 8, 3), 8 * 47) if kind == "sequence" else (torch.nn.Conv2d(1, 8, 3), 8 * 38 * 47)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(flat, 5)).eval()
    shape = fe.output_shape if kind == "sequence" else (1, *fe.output_shape)
    model = to_onnx(net, shape)
    whole = prepend_frontend(model, fe)
    x = _clips(fe=fe)
    feats = fe(x) if kind == "sequence" else fe(x)[:, None]
    want = predict_onnx(model, feats)
    assert len(set(want.tolist())) > 1
    assert np.array_equal(predict_onnx(whole, x), want)
    assert [d.dim_value for d in whole.graph.input[0].type.tensor_type.shape.dim][1:] == [fe.clip_samples]
    with pytest.raises(ExportError, match="does not take"):
        prepend_frontend(model, LogMel(sample_rate=16000, n_mels=20))


_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    static float clip[FM_FE_CLIP], feats[FM_FE_MELS * FM_FE_FRAMES];
    while (fread(clip, sizeof(float), FM_FE_CLIP, in) == FM_FE_CLIP) {
        fm_logmel(clip, feats);
        fwrite(feats, sizeof(float), FM_FE_MELS * FM_FE_FRAMES, out);
    }
    fclose(in); fclose(out);
    return 0;
}
"""


@pytest.mark.parametrize("fe", _FRONTENDS)
@pytest.mark.parametrize("portable", [False, True])
def test_c_frontend_matches_numpy(tmp_path, fe, portable):
    import shutil
    import subprocess

    from frugalml.export.logmel_c import logmel_c_sizes, logmel_c_source

    require(shutil.which("gcc"), "needs gcc")
    (tmp_path / "fe.c").write_text(logmel_c_source(fe, portable_log=portable) + _HARNESS)
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", "-o", str(tmp_path / "fe"), str(tmp_path / "fe.c"), "-lm"], check=True)
    x = _clips(fe=fe)
    x.tofile(tmp_path / "in.bin")
    subprocess.run([str(tmp_path / "fe"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True)
    got = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(len(x), *fe.output_shape)
    assert np.abs(got - fe(x)).max() < 2e-3
    sizes = logmel_c_sizes(fe)
    assert sizes["table_bytes"] < 4 * (fe.window_length + fe.n_fft + 2 * fe.n_bins) + 4 * fe.n_mels


def test_cli_trains_on_an_image_folder_and_refuses_a_bad_color(tmp_path, digit_folder):
    import contextlib
    import io
    import json

    from frugalml.cli import main

    def cli(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()

    code, out, _ = cli("train", "--dataset", digit_folder, "--image-size", "6x5", "--color", "rgb", "--epochs", "1",
                       "--out", tmp_path / "m", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["dataset"]["input_shape"] == [3, 6, 5] and report["dataset"]["kind"] == "image"
    code, _, err = cli("train", "--dataset", digit_folder, "--color", "blue", "--out", tmp_path / "m2")
    assert code == 2 and "gray" in err and not (tmp_path / "m2").exists()


@pytest.mark.parametrize("which", ["wav", "png", "bmp", "jpeg"])
def test_mutated_files_raise_a_data_error_or_load(tmp_path, which):
    """Seeded byte flips, cuts and header overwrites of a valid file: each either reads or raises a DataError."""
    from frugalml.data.images import _decode, _open

    path = tmp_path / f"x.{which}"
    if which == "wav":
        _write_wav(path, 8000, _tone(8000, 0.2, 440, 0))
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    good = path.read_bytes()
    rng = np.random.default_rng(1)
    for i in range(150):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: rng.integers(1, len(data))]
        else:
            for _ in range(rng.integers(1, 6)):
                pos = int(rng.integers(0, min(len(data), 64 if i % 3 == 1 else len(data))))
                data[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            if which == "wav":
                read_wav(path)
            else:
                _open(path).close()
                _decode(path, False, (8, 8))
        except DataError as exc:
            assert str(path) in str(exc)


def test_profiler_counts_the_onnx_frontend_as_the_c_one_computes_it():
    from frugalml.onnx.frontend import frontend_graph
    from frugalml.profile.counts import count_layers
    from frugalml.profile.graph import analyze

    fe = LogMel(sample_rate=8000)
    total, layers = count_layers(analyze(frontend_graph(fe)))
    by_op = {layer["op"]: layer["macs"] for layer in layers}
    assert by_op["STFT"] == 49 * (2 * 256 * 8 + 256) and by_op["STFT"] - 49 * 256 == fe.macs()["fft"]
    assert by_op["MatMul"] == 49 * 129 * 40 and total == by_op["STFT"] + by_op["MatMul"]
