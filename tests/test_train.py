"""`edge train` on real models and datasets made at test time from the asset photos.

Train and test photos of a subject are different crops, scales, brightness and JPEG quality
(different seeds and ranges), so the tests measure recognition under camera variation, not
memory of the training files.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEFAULT_MODEL, IMAGES, MODELS, REPO, TINY_MODEL
from helpers import run_edge
from test_sinks import make_frame, make_result

from edge import train
from edge.metadata import training_record
from edge.model import load_model
from edge.sinks.outbox import Outbox

SUBJECTS = ["cat", "bird", "grace_hopper", "parrot"]
FILES = {"cat": "cat.bmp", "bird": "bird.bmp", "grace_hopper": "grace_hopper.bmp",
         "parrot": "parrot.jpg", "owl": "owl.jpg", "sunflower": "sunflower.bmp"}


def photo(name: str) -> np.ndarray:
    return cv2.imread(str(IMAGES / FILES[name]))  # BGR, as files are written


def camera_shot(bgr: np.ndarray, rng, scale=(0.6, 0.95), light=(0.7, 1.3), size=(320, 240)):
    """A different framing of the subject: crop, scale, brightness (JPEG quality on write)."""
    h, w = bgr.shape[:2]
    s = rng.uniform(*scale)
    ch, cw = int(h * s), int(w * s)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    v = cv2.resize(bgr[y0 : y0 + ch, x0 : x0 + cw], size, interpolation=cv2.INTER_AREA)
    return np.clip(v.astype(np.float32) * rng.uniform(*light), 0, 255).astype(np.uint8)


def make_set(root: Path, n: int, seed: int, subjects=SUBJECTS, quality=(60, 95), **kw) -> Path:
    rng = np.random.default_rng(seed)
    for name in subjects:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            q = int(rng.integers(*quality))
            cv2.imwrite(str(d / f"{seed}_{i}.jpg"), camera_shot(photo(name), rng, **kw),
                        [cv2.IMWRITE_JPEG_QUALITY, q])
    return root


@pytest.fixture(scope="session", autouse=True)
def cache_env(tmp_path_factory):
    """One embedding cache for the session (in-process and CLI runs share it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def train_dir(dataset: Path, out: Path, base: Path = DEFAULT_MODEL, roi=None, **kw) -> dict:
    data = train.scan(dataset)
    emb = train.make_embedder(base, roi, "linear", 2)
    return train.train(data, emb, out, **kw)


@pytest.fixture(scope="session")
def unseen(tmp_path_factory, assets) -> Path:
    """Test photos: other crops, wider scale and light range, lower JPEG quality, other seed."""
    return make_set(tmp_path_factory.mktemp("unseen"), 3, seed=1234, scale=(0.5, 1.0),
                    light=(0.6, 1.4), quality=(35, 70))


@pytest.fixture(scope="session")
def trained(tmp_path_factory, assets) -> tuple[Path, dict, Path]:
    """The CLI trains on 4 photos per subject."""
    root = tmp_path_factory.mktemp("train")
    dataset = make_set(root / "dataset", 4, seed=1)
    out = root / "pets.tflite"
    r = run_edge("train", dataset, "-o", out, "--base", DEFAULT_MODEL)
    assert r.returncode == 0, r.stderr
    return out, training_record(out.read_bytes()), dataset


def classify_json(model: Path, files: list[Path]) -> list[dict]:
    r = run_edge("classify", *files, "--model", model, "--json", "--threads", "1")
    assert r.returncode == 0, r.stderr
    return [json.loads(ln) for ln in r.stdout.splitlines()]


def test_instance_recognition_under_camera_variation(trained, unseen):
    out, record, _ = trained
    assert record["classes"] == sorted(SUBJECTS)
    assert record["images"] == dict.fromkeys(sorted(SUBJECTS), 4)
    assert record["validation"]["accuracy"] >= 0.9
    files = sorted(unseen.glob("*/*.jpg"))
    for res, f in zip(classify_json(out, files), files, strict=True):
        assert res["xnnpack_partitions"] == 1
        assert res["top"][0]["label"] == f.parent.name, f
        assert res["top"][0]["score"] > 0.9


def test_few_shot_one_photo_per_class(tmp_path, unseen):
    """Must show: one photo per subject, then unseen photos: right class, score > 0.9."""
    dataset = make_set(tmp_path / "ds", 1, seed=7)
    result = train_dir(dataset, tmp_path / "few.tflite")
    assert result["record"]["augmented_per_image"] == dict.fromkeys(sorted(SUBJECTS), 9)
    model = load_model(tmp_path / "few.tflite", threads=1)
    for f in sorted(unseen.glob("*/*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        (label, score), = model.top(model.classify(rgb), 1)
        assert label == f.parent.name and score > 0.9, (f, label, score)


def test_exported_model_through_run_and_by_name(trained, unseen, tmp_path):
    out, record, _ = trained
    models = tmp_path / "models"
    models.mkdir()
    (models / "pets.tflite").write_bytes(out.read_bytes())
    env = {"EDGE_MODEL_DIR": str(models)}
    listing = run_edge("models", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.strip().startswith("pets"))
    assert "custom" in line and "bird, cat, grace_hopper, parrot" in line
    assert f"{record['validation']['accuracy']:.1%}" in line
    assert "tf2_mobilenet_v2_1.0_224_ptq.tflite" in line
    frames = tmp_path / "frames"
    frames.mkdir()
    files = sorted(unseen.glob("*/*.jpg"))
    for i, f in enumerate(files):
        (frames / f"{i:03d}.jpg").write_bytes(f.read_bytes())
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("model: {path: pets, threads: 1}\nweb: {enabled: false}\npostprocess: []\n")
    r = run_edge("run", "--source", frames, "--no-drop", "--json", "--config", cfg, env=env)
    assert r.returncode == 0, r.stderr
    results = [json.loads(ln)["result"] for ln in r.stdout.splitlines() if '"result"' in ln]
    assert [x["top"][0]["label"] for x in results] == [f.parent.name for f in files]
    inspect = run_edge("inspect", out)
    assert inspect.returncode == 0, inspect.stderr
    assert "labels.txt (4 labels)" in inspect.stdout and "FULLY_CONNECTED 1" in inspect.stdout


def test_region_state_with_roi_through_edge_run(tmp_path):
    """A feeder region empty or with the bird pasted in: trained with --roi on full frames,
    recognised by `edge run` on a clip, frame by frame."""
    bg = cv2.resize(photo("sunflower"), (640, 480))
    bird = photo("bird")
    box = (0.55, 0.45, 0.95, 0.95)
    x0, y0, x1, y1 = (int(box[0] * 640), int(box[1] * 480), int(box[2] * 640), int(box[3] * 480))

    def frame(with_bird: bool, rng) -> np.ndarray:
        img = np.clip(bg.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        if with_bird:
            s = rng.uniform(0.6, 0.9)
            w, h = int((x1 - x0) * s), int((y1 - y0) * s)
            ox = x0 + int(rng.integers(0, x1 - x0 - w + 1))
            oy = y0 + int(rng.integers(0, y1 - y0 - h + 1))
            img[oy : oy + h, ox : ox + w] = cv2.resize(bird, (w, h))
        return img

    rng = np.random.default_rng(3)
    for state in ("bird", "empty"):
        (tmp_path / "ds" / state).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "ds" / state / f"{i}.jpg"), frame(state == "bird", rng))
    out = tmp_path / "feeder.tflite"
    r = run_edge("train", tmp_path / "ds", "-o", out, "--roi", ",".join(map(str, box)),
                 "--base", DEFAULT_MODEL)
    assert r.returncode == 0, r.stderr
    assert training_record(out.read_bytes())["preprocessing"]["roi"] == list(box)
    clip = tmp_path / "clip.avi"
    states = [bool((i // 3) % 2) for i in range(12)]
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    rng = np.random.default_rng(99)
    for s in states:
        vw.write(frame(s, rng))
    vw.release()
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"model: {{path: {out}, threads: 1}}\nweb: {{enabled: false}}\n"
                   f"postprocess: []\nrois:\n  - {{name: feeder, box: {list(box)}}}\n")
    r = run_edge("run", "--source", clip, "--no-drop", "--json", "--config", cfg)
    assert r.returncode == 0, r.stderr
    results = [json.loads(ln)["result"] for ln in r.stdout.splitlines() if '"result"' in ln]
    assert [x["roi"] for x in results] == ["feeder"] * len(states)
    assert [x["top"][0]["label"] for x in results] == ["bird" if s else "empty" for s in states]


def test_retrain_after_adding_five_photos_costs_five_invokes(tmp_path):
    dataset = make_set(tmp_path / "ds", 20, seed=5, subjects=["cat", "owl"], size=(160, 120))
    first = train_dir(dataset, tmp_path / "a.tflite", base=TINY_MODEL)
    assert first["invokes"] == 40
    again = train_dir(dataset, tmp_path / "b.tflite", base=TINY_MODEL)
    assert again["invokes"] == 0
    make_set(tmp_path / "ds", 5, seed=6, subjects=["cat"], size=(160, 120))
    third = train_dir(dataset, tmp_path / "c.tflite", base=TINY_MODEL)
    assert third["invokes"] == 5 and third["record"]["images"] == {"cat": 25, "owl": 20}


@pytest.mark.arm64
def test_tiny_base_trains_and_exports(tmp_path):
    """The emulated-aarch64 subset: a tiny base, two classes, two photos each."""
    dataset = make_set(tmp_path / "ds", 2, seed=11, subjects=["cat", "sunflower"],
                       size=(160, 120))
    result = train_dir(dataset, tmp_path / "t.tflite", base=TINY_MODEL)
    assert result["checks"]["xnnpack_partitions"] == 1
    assert result["checks"]["int8_float_agreement"] >= 0.99
    model = load_model(tmp_path / "t.tflite", threads=1)
    assert model.labels == ["cat", "sunflower"]
    rgb = cv2.cvtColor(photo("sunflower"), cv2.COLOR_BGR2RGB)
    assert model.top(model.classify(rgb), 1)[0][0] == "sunflower"


def test_keep_base_classes(tmp_path):
    dataset = make_set(tmp_path / "ds", 3, seed=8, subjects=["owl", "sunflower"])
    (tmp_path / "ds" / "sunflower").rename(tmp_path / "ds" / "my_sunflower")
    (tmp_path / "ds" / "owl").rename(tmp_path / "ds" / "my_owl")
    result = train_dir(dataset, tmp_path / "k.tflite", keep_base=True)
    model = load_model(tmp_path / "k.tflite", threads=1)
    assert len(model.labels) == 1001 + 2 and model.labels[-2:] == ["my_owl", "my_sunflower"]
    assert result["record"]["keep_base_classes"] is True
    cat = cv2.cvtColor(photo("cat"), cv2.COLOR_BGR2RGB)
    assert "cat" in model.top(model.classify(cat), 1)[0][0]  # base classes still answer
    rng = np.random.default_rng(77)
    shot = cv2.cvtColor(camera_shot(photo("owl"), rng), cv2.COLOR_BGR2RGB)
    assert model.top(model.classify(shot), 1)[0][0] == "my_owl"


def test_collect_interval_mode_feeds_the_unlabelled_folder(tmp_path):
    photos = [cv2.cvtColor(photo(n), cv2.COLOR_BGR2RGB) for n in ("cat", "owl")]
    ob = Outbox([("collect", {"dir": str(tmp_path), "mode": "interval", "every_s": 0,
                              "max_files": 3, "queue": 100})], "d", "m")
    ob.start()
    for i in range(5):
        f = make_frame(i, photos[i % 2])
        ob.publish(make_result(f, [("cat", 0.99)], "flap"), [], f)  # far outside the band
    ob.close()
    saved = sorted((tmp_path / train.UNLABELLED).glob("*.jpg"))
    assert len(saved) == 3 and ob.sink_stats()["collect"]["pruned"] == 2  # the budget holds
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "x.jpg"), cv2.imread(str(saved[0])))
    assert train.scan(tmp_path).classes == ["a", "b"]  # the unlabelled folder is no class


# ------------------------------------------------------------------ bad input: exit 2, one line


def fails(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edge: error:")]
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_bad_datasets(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(run_edge("train", empty, "-o", tmp_path / "o.tflite"), "empty dataset")
    fails(run_edge("train", tmp_path / "nope", "-o", tmp_path / "o.tflite"), "not found")
    one = make_set(tmp_path / "one", 1, seed=1, subjects=["cat"], size=(64, 48))
    fails(run_edge("train", one, "-o", tmp_path / "o.tflite"), "only one class", "cat")
    bad = make_set(tmp_path / "bad", 1, seed=1, subjects=["cat"], size=(64, 48))
    (bad / "owl").mkdir()
    (bad / "owl" / "a.jpg").write_bytes(b"not a jpeg at all")
    fails(run_edge("train", bad, "-o", tmp_path / "o.tflite"), "'owl' has no readable image")
    assert not (tmp_path / "o.tflite").exists()


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path):
    ds = make_set(tmp_path / "ds", 2, seed=2, subjects=["cat", "owl"], size=(160, 120))
    good = (ds / "cat" / "2_0.jpg").read_bytes()
    (ds / "cat" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (ds / "owl" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    # a JPEG signature and end marker around nothing: it fails only when decoded
    (ds / "owl" / "zz.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300) + b"\xff\xd9")
    r = run_edge("train", ds, "-o", tmp_path / "o.tflite", "--base", TINY_MODEL)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable image in cat: cut.jpg" in r.stderr
    assert "skipped 2 unreadable images in owl: junk.png, zz.jpg" in r.stderr
    record = training_record((tmp_path / "o.tflite").read_bytes())
    assert record["images"] == {"cat": 2, "owl": 2} and record["skipped"] == {"cat": 1, "owl": 2}


def test_base_without_embedding_existing_output_and_bad_roi(tmp_path):
    ds = make_set(tmp_path / "ds", 1, seed=3, subjects=["cat", "owl"], size=(64, 48))
    seg = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    fails(run_edge("train", ds, "-o", tmp_path / "o.tflite", "--base", seg),
          "no embedding tensor", "MEAN or AVERAGE_POOL_2D")
    (tmp_path / "exists.tflite").write_bytes(b"keep me")
    fails(run_edge("train", ds, "-o", tmp_path / "exists.tflite"), "exists", "--force")
    assert (tmp_path / "exists.tflite").read_bytes() == b"keep me"
    fails(run_edge("train", ds, "-o", tmp_path / "o.tflite", "--roi", "0.5,0,0.2,1",
                   "--base", TINY_MODEL), "--roi")
    fails(run_edge("train", ds, "-o", tmp_path / "o.tflite", "--threads", "lots",
                   "--base", TINY_MODEL), "--threads")


def test_full_disk_leaves_no_partial_model(tmp_path):
    ds = make_set(tmp_path / "ds", 1, seed=4, subjects=["cat", "owl"], size=(64, 48))
    out = tmp_path / "o.tflite"
    first = run_edge("train", ds, "-o", tmp_path / "warm.tflite", "--base", TINY_MODEL)
    assert first.returncode == 0, first.stderr  # caches filled: only the model write is left

    def small_files():  # writes past 64 KB fail with EFBIG, as a full disk fails with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = [sys.executable, "-m", "edge", "train", str(ds), "-o", str(out), "--base", TINY_MODEL]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
                       preexec_fn=small_files)
    fails(r, str(out), "nothing was written")
    assert not out.exists() and not list(tmp_path.glob(".o.tflite.*"))


def test_reload_picks_up_a_retrained_model_under_the_same_name(tmp_path, trained):
    from edge import config
    from edge.pipeline import Pipeline

    out, _, dataset = trained
    models = tmp_path / "models"
    models.mkdir()
    (models / "pets.tflite").write_bytes(out.read_bytes())
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGE_MODEL_DIR", str(models))
    try:
        cfg_file = tmp_path / "edge.yaml"
        cfg_file.write_text("model: {path: pets, threads: 1}\npostprocess: []\noutputs: []\n")
        cfg = config.load(cfg_file)
        pipe = Pipeline(cfg, load_model(models / "pets.tflite", threads=1))
        assert pipe.reload(str(cfg_file)) is True and pipe.model.labels == sorted(SUBJECTS)
        (dataset.parent / "more").mkdir()
        make_set(dataset.parent / "more", 2, seed=21, subjects=["owl", "sunflower"])
        train_dir(dataset.parent / "more", models / "pets.tflite")
        assert pipe.reload(str(cfg_file)) is True  # same config, new file under the name
        assert pipe.model.labels == ["owl", "sunflower"]
    finally:
        mp.undo()


@pytest.mark.parametrize("base", ["mobilenet_v2_1.0_224_quant.tflite",
                                  "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
                                  "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"])
def test_uint8_bases_train_and_export(base, tmp_path, unseen):
    dataset = make_set(tmp_path / "ds", 2, seed=13, subjects=["cat", "parrot"])
    result = train_dir(dataset, tmp_path / "u.tflite", base=MODELS / base)
    assert result["checks"]["xnnpack_partitions"] == 1
    model = load_model(tmp_path / "u.tflite", threads=1)
    assert model.input_dtype == np.uint8 and model.labels == ["cat", "parrot"]
    for f in sorted(unseen.glob("cat/*.jpg")) + sorted(unseen.glob("parrot/*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        assert model.top(model.classify(rgb), 1)[0][0] == f.parent.name


def test_plot_and_its_missing_dependency(tmp_path, monkeypatch):
    dataset = make_set(tmp_path / "ds", 2, seed=17, subjects=["cat", "owl"], size=(160, 120))
    train_dir(dataset, tmp_path / "p.tflite", base=TINY_MODEL, plot=tmp_path / "cm.png")
    png = cv2.imread(str(tmp_path / "cm.png"))
    assert png is not None and png.shape[0] > 100
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(train.EdgeError, match="--plot needs matplotlib"):
        train_dir(dataset, tmp_path / "q.tflite", base=TINY_MODEL, plot=tmp_path / "x.png")
    assert not (tmp_path / "q.tflite").exists()


def test_export_check_fails_loudly_and_writes_nothing(tmp_path):
    """The agreement check can fail: against top-1 answers the int8 head does not give, the
    export is refused and nothing appears under the output name."""
    from edge import surgery

    dataset = make_set(tmp_path / "ds", 2, seed=19, subjects=["cat", "owl"], size=(160, 120))
    data = train.scan(dataset)
    emb = train.make_embedder(TINY_MODEL, None, "linear", 1)
    q = np.stack([rows[0] for _, rows in emb.embed_all(data.images, lambda im: 1)])
    rng = np.random.default_rng(0)
    head = surgery.Head(rng.normal(0, 0.1, (2, q.shape[1])), np.zeros(2), (-4.0, 4.0))
    head_buf = surgery.head_model(emb.pooled, head)
    int8_top1 = surgery.run_head(head_buf, q).argmax(axis=1)
    out = tmp_path / "never.tflite"
    with pytest.raises(train.ModelError, match="agrees with the float head on only 0.0%"):
        train.write_checked(out, b"model bytes", lambda tmp: train.check_export(
            tmp, str(out), emb, head_buf, 1 - int8_top1, q, data.images))
    assert not out.exists() and not list(tmp_path.glob(".never.tflite.*"))
