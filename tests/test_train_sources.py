"""Training on several sources: per-source sampling weights and the pretrained model as a teacher."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from utils.train.inputs import DISTILL_MASK, KEEP_MASK, SOURCE_KEY, SsdInput, count_sources
from utils.train.model import ssd_anchors
from utils.train.training import ConfigError, distillation_losses, load_config

tf = pytest.importorskip("tensorflow")


def _example(source: str, seed: int) -> bytes:
    """A real JPEG with one box, in the Object Detection API's keys plus the source field."""
    rng = np.random.default_rng(seed)
    ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assert ok
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg.tobytes()])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{seed}.jpg".encode()])),
        "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{seed}.jpg".encode()])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[60])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[80])),
        "image/object/bbox/xmin": tf.train.Feature(float_list=tf.train.FloatList(value=[0.2])),
        "image/object/bbox/xmax": tf.train.Feature(float_list=tf.train.FloatList(value=[0.6])),
        "image/object/bbox/ymin": tf.train.Feature(float_list=tf.train.FloatList(value=[0.3])),
        "image/object/bbox/ymax": tf.train.Feature(float_list=tf.train.FloatList(value=[0.7])),
        "image/object/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"hand"])),
        "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
    }
    if source:
        feature[SOURCE_KEY] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture()
def mixed_records(tmp_path):
    """4 'egohands' examples beside 36 'oxford' ones: a 1:9 mix, as small egocentric sets are."""
    path = tmp_path / "train.record"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(40):
            writer.write(_example("egohands" if i % 10 == 0 else "oxford", i))
    return path


def test_count_sources(mixed_records, tmp_path):
    assert count_sources([mixed_records]) == {"egohands": 4, "oxford": 36}
    old = tmp_path / "old.record"
    with tf.io.TFRecordWriter(str(old)) as writer:
        writer.write(_example("", 0))
    assert count_sources([old]) == {"": 1}  # records from before sources existed


def test_source_weights_balance_batches_and_mask_the_teacher_sources(mixed_records):
    data = SsdInput(ssd_anchors(), 1, ["hand"], {})
    dataset = data.train_dataset([mixed_records], batch_size=20, shuffle_buffer=64, seed=1,
                                 source_weights={"egohands": 1.0, "oxford": 1.0}, distill_sources=["egohands"])
    masks = np.concatenate([targets[DISTILL_MASK].numpy() for _, targets in dataset.take(10)])
    # 200 draws at 1:1 instead of the records' 1:9: about 100 egocentric ones (binomial sd ~7)
    assert 70 < masks.sum() < 130
    assert set(np.unique(masks)) == {0.0, 1.0}
    plain = data.train_dataset([mixed_records], batch_size=20, shuffle_buffer=64, seed=1)
    assert DISTILL_MASK not in next(iter(plain))[1] and KEEP_MASK not in next(iter(plain))[1]
    # a second teacher's mask (loss.keep_sources) beside the first: the two sources' images, disjoint
    both = data.train_dataset([mixed_records], batch_size=20, shuffle_buffer=64, seed=1,
                              source_weights={"egohands": 1.0, "oxford": 1.0}, distill_sources=["egohands"],
                              keep_sources=["oxford"])
    _, targets = next(iter(both))
    assert np.array_equal(targets[DISTILL_MASK].numpy() + targets[KEEP_MASK].numpy(), np.ones(20))


def test_the_default_shuffle_mixes_records_written_in_groups(tmp_path):
    """Records come grouped (labels-CSV order: by source, by video): the first batches already mix the
    groups, instead of walking through them one after the other."""
    path = tmp_path / "grouped.record"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(1200):
            writer.write(_example("first" if i < 600 else "second", i % 7))
    data = SsdInput(ssd_anchors(), 1, ["hand"], {})
    dataset = data.train_dataset([path], batch_size=32, seed=1, distill_sources=["second"])
    share = np.concatenate([targets[DISTILL_MASK].numpy() for _, targets in dataset.take(2)]).mean()
    assert 0.3 < share < 0.7, share  # a 256-record buffer gave 0.0: only the first group


def test_distillation_is_zero_when_the_student_agrees_and_pulls_it_towards_the_teacher():
    cfg = load_config(None, ["loss.distillation_weight=1.0"])["loss"]
    rng = np.random.default_rng(0)
    teacher = {"class_logits": tf.constant(rng.normal(0, 3, (2, 50, 2)), tf.float32),
               "box_encodings": tf.constant(rng.normal(0, 1, (2, 50, 4)), tf.float32)}
    mask = tf.constant([1.0, 0.0])
    same = distillation_losses(teacher, teacher, mask, cfg)["distillation"]
    assert float(same) == pytest.approx(0.0, abs=1e-5)

    student_logits = tf.Variable(tf.zeros((2, 50, 2)))
    student_boxes = tf.Variable(tf.zeros((2, 50, 4)))
    with tf.GradientTape() as tape:
        loss = distillation_losses({"class_logits": student_logits, "box_encodings": student_boxes}, teacher,
                                   mask, cfg)["distillation"]
    assert float(loss) > 0.1
    grad_logits, grad_boxes = tape.gradient(loss, [student_logits, student_boxes])
    # only the masked image learns from the teacher, in the teacher's direction
    assert not np.any(grad_logits.numpy()[1]) and not np.any(grad_boxes.numpy()[1])
    toward = -grad_logits.numpy()[0] * np.sign(teacher["class_logits"].numpy()[0])
    assert (toward >= 0).all()


@pytest.mark.parametrize("override, message", [
    ("data.source_weights=[1, 2]", "data.sources and data.source_weights are parallel lists"),
    ("data.source_weights={egohands: 1}", "'data.source_weights' must be a list"),
    ("loss.distillation_weight=-1", "must be >= 0"),
    ("model.fine_anchor_scales=[0.05, 1.5]", "model.fine_anchor_scales are fractions of the input side"),
    ("model.fine_lateral_channels=32", "model.fine_lateral_channels must be >= 0 and needs model.fine_anchor_scales"),
    ("loss.keep_weight=1", "loss.keep_weight needs model.init_checkpoint"),
    ("loss.keep_weight=-1", "loss.keep_weight must be >= 0"),
    ("loss.distillation_checkpoint=stage2", "loss.distillation_checkpoint needs loss.distillation_weight > 0"),
])
def test_bad_source_and_distillation_settings(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


def test_each_source_has_one_teacher():
    with pytest.raises(ConfigError, match="oxford in both loss.distillation_sources and loss.keep_sources"):
        load_config(None, ["loss.distillation_weight=1", "loss.distillation_sources=[egohands, oxford]",
                           "loss.keep_weight=1", "loss.keep_sources=[oxford]", "model.init_checkpoint=stage1"])


def test_distillation_needs_one_class():
    with pytest.raises(ConfigError, match="needs model.num_classes 1"):
        load_config(None, ["loss.distillation_weight=1", "model.num_classes=4"])
    # a run of this project as the teacher may have any class count (prepare_training checks it is this run's)
    load_config(None, ["loss.distillation_weight=1", "model.num_classes=4", "loss.distillation_checkpoint=stage2"])


def test_the_teacher_runs_on_the_distilled_images_only():
    from utils.train.training import taught_only

    seen = []

    def teacher(images):
        seen.append(int(images.shape[0]))
        per_image = tf.reduce_mean(images, [1, 2, 3])[:, None, None]
        return {"class_logits": tf.tile(per_image, [1, 5, 2]), "box_encodings": tf.tile(per_image, [1, 5, 4]),
                "distill_anchors": tf.ones([5])}

    images = tf.constant(np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 3, 3, 3), np.float32))
    out = taught_only(teacher, images, tf.constant([0.0, 1.0, 0.0, 1.0]))
    assert seen == [2]
    assert out["class_logits"].shape == (4, 5, 2) and out["distill_anchors"].shape == (5,)
    assert np.array_equal(out["class_logits"].numpy()[:, 0, 0], [0, 1, 0, 3])
    assert np.array_equal(out["box_encodings"].numpy()[:, 0, 0], [0, 1, 0, 3])
    none = taught_only(teacher, images, tf.zeros([4]))  # the first image (masked out), never an empty batch
    assert seen[-1] == 1 and none["class_logits"].shape == (4, 5, 2)


def test_blended_weights_lie_between_the_two_runs():
    from utils.train.model import ModelError
    from utils.train.shipped import blend_weights

    ours = {"conv/0": np.array([0.0, 4.0], np.float32), "conv/1": np.array([1.0], np.float32)}
    theirs = {"conv/0": np.array([2.0, 0.0], np.float32), "conv/1": np.array([-1.0], np.float32)}
    for share, expected in ((0.0, ours), (1.0, theirs)):
        blended = blend_weights(ours, theirs, share)
        assert all(np.array_equal(blended[name], expected[name]) for name in ours)
    quarter = blend_weights(ours, theirs, 0.25)
    assert np.allclose(quarter["conv/0"], [0.5, 3.0]) and np.allclose(quarter["conv/1"], [0.5])
    assert quarter["conv/0"].dtype == np.float32
    with pytest.raises(ModelError, match="must be in"):
        blend_weights(ours, theirs, -0.1)
