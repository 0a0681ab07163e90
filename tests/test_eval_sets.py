"""The five evaluation sets on fixtures in their real layouts, with a model whose predictions the test
chooses: every metric is compared with a value computed by hand."""
import json
from pathlib import Path

import pytest
import torch

from support.evalsets import CLASSES, CodeModel, eval_config, ranked_logits, write_code_image
from gsam.config.checks import ConfigError
from gsam.evaluation.sets import build_eval_sets, measure_sets, real_targets, timm_real_labels
from gsam.evaluation.metrics import ALEXNET_ERROR, BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, corruption_summary
from gsam.evaluation.table1 import table1_row

CPU = torch.device("cpu")


def cfg_for(**eval_keys):
    return eval_config({"img_size": 8, "eval_batch_size": 4, "num_workers": 0, "crop_pct": 1.0}, **eval_keys)


def build(cfg, loaders=None, files=None, notices=None):
    return build_eval_sets(cfg, classes=CLASSES, loaders=loaders or {}, files=files or {}, loss_fn=None,
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), rank=0, world=1,
                           notice=(notices.append if notices is not None else lambda *_: None))


def val_loader(tmp_path, codes_and_labels):
    """ImageNet val in wnid folders, files named ILSVRC2012_val_<n> (n = 1 + position in the list)."""
    from gsam.data.folder import eval_loader, eval_transform

    samples = []
    for n, (code, label) in enumerate(codes_and_labels, start=1):
        path = tmp_path / "val" / CLASSES[label] / f"ILSVRC2012_val_{n:08d}.JPEG"
        write_code_image(path, code)
        samples.append((str(path), label))
    loader = eval_loader(samples, eval_transform(8, (0.0,) * 3, (1.0,) * 3, crop_pct=1.0), batch=4, num_workers=0,
                         rank=0, world=1)
    return loader, [p for p, _ in samples]


def test_imagenet_top1_top5_and_real(tmp_path):
    # 6 val images; image i has code i; the table says what the model predicts for each
    labels = [3, 3, 7, 7, 9, 9]
    table = torch.stack([ranked_logits(3, 1, 2, 4, 5),   # top-1 right
                         ranked_logits(1, 2, 4, 5, 3),   # right at rank 5
                         ranked_logits(7),               # top-1 right
                         ranked_logits(2, 1, 0, 4, 5),   # wrong, not in top-5
                         ranked_logits(8, 9),            # top-2
                         ranked_logits(9)]               # top-1 right
                        + [torch.zeros(1000)] * 1018)
    loader, files = val_loader(tmp_path, [(i, y) for i, y in enumerate(labels)])
    # ReaL lists for val images 1..6: [], [1], [7, 2], [5], [8, 9], [3]
    real = [[], [1], [7, 2], [5], [8, 9], [3]]
    (tmp_path / "real.json").write_text(json.dumps(real))
    evs = build(cfg_for(real_labels=str(tmp_path / "real.json")), {"val": loader}, {"val": files})
    m = evs["val"](CodeModel(table), CPU, None)
    assert m["images"] == 6
    assert m["top1"] == pytest.approx(100 * 3 / 6)  # images 0, 2, 5
    assert m["top5"] == pytest.approx(100 * 5 / 6)  # all but image 3
    # ReaL: image 0 has no labels (left out); hits: image 1 (pred 1), image 2 (pred 7), image 4 (pred 8); 5 counted
    assert m["real_images"] == 5 and m["real_top1"] == pytest.approx(100 * 3 / 5)
    assert table1_row({"val": m}) == {"imagenet": m["top1"], "real": m["real_top1"]}


def test_the_evaluation_shows_a_bar_per_set_only_when_asked(tmp_path, capsys):
    """measure_sets, as train.py and evaluate.py call it: with progress (rank 0 and train.progress) a bar per set
    on stderr, as the training bar, counting every batch; without, nothing; the same numbers either way."""
    labels = [3, 7, 9, 3, 7, 9, 3, 7, 9]  # 9 images in batches of 4: 3 batches
    table = torch.stack([ranked_logits(y if i % 3 else 0) for i, y in enumerate(labels)] + [torch.zeros(1000)] * 1015)
    loader, files = val_loader(tmp_path, list(enumerate(labels)))
    sets = build(cfg_for(), {"val": loader}, {"val": files})
    quiet = measure_sets(sets, CodeModel(table), CPU, None, False, progress=False)
    assert capsys.readouterr().err == ""
    shown = measure_sets(sets, CodeModel(table), CPU, None, False, progress=True)
    err = capsys.readouterr().err
    assert "eval val" in err and "3/3" in err
    assert shown == quiet and quiet["val"]["images"] == 9 and quiet["val"]["top1"] == pytest.approx(100 * 6 / 9)


def test_real_targets_follow_the_file_number_not_the_order(tmp_path):
    real = [[0], [1], [2, 5], []]
    (tmp_path / "real.json").write_text(json.dumps(real))
    t = real_targets(tmp_path / "real.json", ["a/ILSVRC2012_val_00000003.JPEG", "b/ILSVRC2012_val_00000001.JPEG",
                                               "ILSVRC2012_val_00000004.JPEG"])
    assert t.tolist() == [[2, 5], [0, -1], [-1, -1]]
    assert real_targets(tmp_path / "real.json", ["digits_00001.JPEG"]) is None


def test_the_real_labels_come_from_timms_wheel():
    real = json.loads(timm_real_labels().read_text())
    assert len(real) == 50_000 and sum(1 for r in real if not r) == 3163  # as documented by ReaL's authors


def test_v2_folder_names_are_class_indices_not_string_order(tmp_path):
    # folders 0, 2, 10: ImageFolder would label them 0, 2, 1 (string order "0" < "10" < "2")
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    for k, (folder, code) in enumerate([("0", 0), ("2", 1), ("10", 2), ("10", 3)]):
        write_code_image(root / folder / f"{k:040x}.jpeg", code)
    table = torch.zeros(1024, 1000)
    table[0] = ranked_logits(0)
    table[1] = ranked_logits(2)
    table[2] = ranked_logits(10)
    table[3] = ranked_logits(1, 10)  # the string-order label of folder 10; right only in the top-5
    m = build(cfg_for(v2=str(root)))["v2"](CodeModel(table), CPU, None)
    assert m["images"] == 4 and m["top1"] == pytest.approx(75.0) and m["top5"] == pytest.approx(100.0)


def test_r_masked_and_over_all_classes(tmp_path):
    root = tmp_path / "imagenet-r"  # classes 1, 4, 6: the "200" classes of this fixture
    for k, (cls, code) in enumerate([(1, 0), (4, 1), (6, 2), (6, 3), (1, 4)]):
        write_code_image(root / CLASSES[cls] / f"art_{k}.jpg", code)
    table = torch.zeros(1024, 1000)
    table[0] = ranked_logits(0, 1)     # class 1. all classes: 0, a miss; masked to {1, 4, 6}: 1, a hit
    table[1] = ranked_logits(4)        # class 4: a hit both ways
    table[2] = ranked_logits(999, 4)   # class 6: 999 / 4, a miss both ways
    table[3] = ranked_logits(6)        # class 6: a hit both ways
    table[4] = ranked_logits(7, 6, 1)  # class 1. all: 7, a miss; masked: 6, a miss
    m = build(cfg_for(r=str(root)))["r"](CodeModel(table), CPU, None)
    assert m["classes"] == 3 and m["images"] == 5
    assert m["top1_masked"] == pytest.approx(100 * 3 / 5) and m["top1_all"] == pytest.approx(100 * 2 / 5)
    assert table1_row({"r": m}) == {"r": pytest.approx(40.0), "r_masked": pytest.approx(60.0)}


def test_r_rejects_folders_that_are_not_training_classes(tmp_path):
    write_code_image(tmp_path / "r" / "n99999999" / "a.jpg", 0)
    with pytest.raises(ValueError, match="not training classes"):
        build(cfg_for(r=str(tmp_path / "r")))


def test_c_per_cell_accuracy_means_and_mce(tmp_path):
    root = tmp_path / "imagenet-c"
    names = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    table = torch.zeros(1024, 1000)
    table[1] = ranked_logits(5)  # code 1 -> right (class 5); code 0 -> class 0 -> wrong
    right = {}
    for ci, c in enumerate(names):
        for s in range(1, 6):
            # 2 images per cell; the second is right when (ci + s) is even -> 50% or 100%; the first always right
            write_code_image(root / c / str(s) / CLASSES[5] / "a.JPEG", 1, size=10)
            write_code_image(root / c / str(s) / CLASSES[5] / "b.JPEG", 1 if (ci + s) % 2 == 0 else 0, size=10)
            right[c, s] = 100.0 if (ci + s) % 2 == 0 else 50.0
    m = build(cfg_for(c=str(root)))["c"](CodeModel(table), CPU, None)
    for (c, s), acc in right.items():
        assert m["per_corruption"][c][str(s)] == pytest.approx(acc), (c, s)
    mean15 = sum(right[c, s] for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)) / 75
    mean19 = sum(right.values()) / 95
    mce = sum(sum(1 - right[c, s] / 100 for s in range(1, 6)) / 5 / ALEXNET_ERROR[c]
              for c in BENCHMARK_CORRUPTIONS) / 15 * 100
    assert m["mean15"] == pytest.approx(mean15) and m["mean19"] == pytest.approx(mean19)
    assert m["mce15"] == pytest.approx(mce) and m["top1"] == pytest.approx(mean19)
    row = table1_row({"c": m})
    assert row["c"] == pytest.approx(mean19) and row["c_mce"] == pytest.approx(mce)


def test_c_images_are_centre_cropped_not_resized(tmp_path):
    # a 10x10 image: an 8x8 colour-1 centre inside a colour-0 frame; a resize first would mix in the frame
    from PIL import Image

    path = tmp_path / "c" / "fog" / "3" / CLASSES[5] / "a.png"
    path.parent.mkdir(parents=True)
    inner = (8 * 0 + 4, 8 * 1 + 4, 128)
    im = Image.new("RGB", (10, 10), (4 + 8 * 31, 4 + 8 * 31, 0))
    im.paste(Image.new("RGB", (8, 8), inner), (1, 1))
    im.save(path)
    table = torch.zeros(1024, 1000)
    table[1] = ranked_logits(5)
    m = build(cfg_for(c=str(tmp_path / "c")))["c"](CodeModel(table), CPU, None)
    assert m["per_corruption"]["fog"]["3"] == 100.0
    assert "mean15" not in m and "mean19" not in m and m["top1"] == m["mean_found"] == 100.0


def test_corruption_summary_without_all_severities_has_no_benchmark_means():
    cells = {c: {s: 50.0 for s in range(1, 6)} for c in BENCHMARK_CORRUPTIONS}
    cells["fog"].pop(5)
    out = corruption_summary(cells)
    assert "mean15" not in out and "mce15" not in out
    cells["fog"][5] = 50.0
    # every error 0.5: mCE = mean over c of 0.5 / alexnet_c
    expected = 100 * sum(0.5 / ALEXNET_ERROR[c] for c in BENCHMARK_CORRUPTIONS) / 15
    assert corruption_summary(cells)["mce15"] == pytest.approx(expected)


def test_unset_sets_are_skipped_with_a_notice_and_a_wrong_path_is_an_error(tmp_path):
    notices = []
    assert build(cfg_for(), notices=notices) == {}
    assert [n.split(":")[1].split()[0] for n in notices] == ["v2", "r", "c"]
    with pytest.raises(ConfigError, match=r"eval\.sets\.v2\.path='/no/such/v2'"):
        build(cfg_for(v2="/no/such/v2"))
    write_code_image(tmp_path / "c" / "fog" / "1" / CLASSES[0] / "a.jpg", 0)
    with pytest.raises(ConfigError, match=r"eval\.sets\.c\.corruptions: \['snow'\] not found"):
        build(cfg_for(c=str(tmp_path / "c"), corruptions=["snow"]))


def test_a_corrupt_eval_image_is_skipped_and_not_counted(tmp_path):
    root = tmp_path / "v2"
    write_code_image(root / "3" / "good.jpeg", 0)
    (root / "3" / "bad.jpeg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    table = torch.zeros(1024, 1000)
    table[0] = ranked_logits(3)
    with pytest.warns(UserWarning, match="bad.jpeg"):
        m = build(cfg_for(v2=str(root)))["v2"](CodeModel(table), CPU, None)
    assert m["images"] == 1 and m["top1"] == 100.0


@pytest.mark.slow
def test_distributed_evaluation_counts_every_image_once(tmp_path):
    """torchrun, 2 gloo processes, odd set sizes: the same metrics as 1 process, every image counted once."""
    import os
    import subprocess
    import sys

    from support.evalsets import evaluate_all, write_mixed_fixture

    settings = write_mixed_fixture(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    here = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(here.parent)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(here / "eval_worker.py"), str(tmp_path / "settings.json"), str(tmp_path / "out.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = json.loads((tmp_path / "out.json").read_text())
    one = json.loads(json.dumps(evaluate_all(settings, 0, 1)))
    assert two["val"].pop("loss") == pytest.approx(one["val"].pop("loss"), rel=1e-6)  # float32 sums in another order
    assert two == one
    assert one["val"]["images"] == 7 and one["val"]["real_images"] == 5
    assert one["v2"]["images"] == 7 and one["r"]["images"] == 5
    assert set(one["c"]["per_corruption"]) == {"fog", "snow"}
    assert 0 < one["val"]["top5"] < 100 or 0 < one["v2"]["top1"] < 100  # the table is not trivially right or wrong


def test_imagenet_r_folders_must_be_timms_200_classes(tmp_path):
    """With the real ImageNet-1k wnids, the R subset is checked against timm's list: the logit mask is then
    exactly timm's imagenet_r_indices; a partial copy is an error, not a silently different subset."""
    from gsam.evaluation.sets import _timm_info, check_imagenet_r_classes

    synsets = _timm_info("imagenet_synsets.txt").read_text().split()
    r_wnids = _timm_info("imagenet_r_synsets.txt").read_text().split()
    r_indices = [int(i) for i in _timm_info("imagenet_r_indices.txt").read_text().split()]
    cols = [synsets.index(w) for w in sorted(r_wnids)]
    assert len(cols) == 200 and cols == sorted(r_indices)  # the mask we build is timm's
    check_imagenet_r_classes(cols, synsets)
    with pytest.raises(ConfigError, match=r"eval\.sets\.r\.path: .*1 missing"):
        check_imagenet_r_classes(cols[1:], synsets, "eval.sets.r.path")
    for w in r_wnids[:3]:
        write_code_image(tmp_path / "r" / w / "a.jpg", 0)
    with pytest.raises(ConfigError, match="197 missing"):
        build_eval_sets(cfg_for(r=str(tmp_path / "r")), classes=synsets, loaders={}, files={}, loss_fn=None,
                         mean=(0.0,) * 3, std=(1.0,) * 3, rank=0, world=1, notice=lambda *_: None)


USER_EVAL_YAML = """
eval:
  sets:
    v2_top:
      kind: imagenet_v2
      path: {v2}
    a:
      kind: imagenet_a
      path: /data/imagenet-a
"""


def test_a_users_set_is_one_more_entry_and_an_unknown_kind_is_one_line_naming_the_key(tmp_path, compose):
    """A user's YAML adds sets to the shipped ones: an entry of a known kind is built under its own name; an
    unknown kind, or a key its kind does not read, is one line naming the key. The key check leaves the entries
    to the builder."""
    import yaml
    from omegaconf import OmegaConf

    from gsam.config.keys import check_known_keys

    write_code_image(tmp_path / "v2" / "3" / "a.jpeg", 0)
    user = OmegaConf.create(yaml.safe_load(USER_EVAL_YAML.format(v2=tmp_path / "v2")))
    cfg = compose("+experiment=demo_gsam")
    OmegaConf.set_struct(cfg, False)  # as Hydra merges a user's file: new keys allowed, struct after composition
    cfg = OmegaConf.merge(cfg, user)
    check_known_keys(cfg)
    with pytest.raises(ConfigError) as e:
        build(cfg)
    assert str(e.value).count("\n") == 0 and str(e.value).startswith("eval.sets.a.kind='imagenet_a': unknown kind")
    assert "imagenet_v2, imagenet_r, imagenet_c" in str(e.value)
    del cfg.eval.sets["a"]
    cfg.eval.sets.v2_top.pth = "/typo"
    with pytest.raises(ConfigError, match=r"^eval\.sets\.v2_top\.pth: not a key of kind imagenet_v2"):
        build(cfg)
    del cfg.eval.sets.v2_top["pth"]
    for name in ("v2", "r", "c"):
        cfg.eval.sets[name].path = None
    sets = build(cfg)
    assert list(sets) == ["v2_top"] and sets["v2_top"].name == "v2_top"
    assert build(cfg)["v2_top"](CodeModel(torch.zeros(1024, 1000)), CPU, None)["images"] == 1
