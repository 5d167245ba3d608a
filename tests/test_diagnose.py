import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from ssdlearn.diagnose import (  # noqa: E402
    KINDS,
    ap_by_characteristic,
    characteristic_bins,
    detection_kinds,
    diagnose_main,
    format_by_characteristic,
    format_kind_shares,
    kind_shares,
    plot_by_characteristic,
    plot_kind_shares,
)
from ssdlearn.metrics import evaluate_voc  # noqa: E402

# ---- helpers -------------------------------------------------------------------------------


def pred(boxes, scores, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.long)}  # fmt: skip


def gt(boxes, labels, **flags) -> dict:
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.long)}  # fmt: skip
    out.update({k: torch.tensor(v, dtype=torch.bool) for k, v in flags.items()})
    return out


def shifted(box, dx):
    x1, y1, x2, y2 = box
    return [x1 + dx, y1, x2 + dx, y2]


OBJ = [0.0, 0.0, 10.0, 10.0]
# IoU with OBJ: shifted by 2 -> 8/12 = 0.667; by 5 -> 5/15 = 0.333; by 9 -> 1/19 = 0.053.


def reference_kinds(predictions, targets, similar=()):
    """The rules read literally: one detection at a time, best score first, all Python."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    dets = []
    for i, p in enumerate(predictions):
        for j in range(len(p["scores"])):
            dets.append((-float(p["scores"][j]), i, j))
    dets.sort()  # by score, then image, then index: the stable order
    claimed = set()
    out = [[None] * len(p["scores"]) for p in predictions]
    for _, i, j in dets:
        box = predictions[i]["boxes"][j].tolist()
        label = int(predictions[i]["labels"][j])
        objects = targets[i]
        flags = torch.zeros(len(objects["labels"]), dtype=torch.bool)
        for key in ("difficult", "iscrowd"):
            if key in objects:
                flags |= objects[key]
        ious = [iou(box, b) for b in objects["boxes"].tolist()]
        labels = objects["labels"].tolist()
        same = [g for g in range(len(labels)) if labels[g] == label]
        free = [g for g in same if ious[g] >= 0.5 and not flags[g] and (i, g) not in claimed]
        if free:
            best = max(free, key=lambda g: (ious[g], -g))
            claimed.add((i, best))
            kind = "correct"
        elif any(ious[g] >= 0.5 and flags[g] for g in same):
            kind = "ignored"
        elif any(ious[g] >= 0.5 for g in same):
            kind = "duplicate"
        elif any(ious[g] >= 0.1 for g in same):
            kind = "localization"
        elif any(ious[g] >= 0.1 and labels[g] != label
                 and any(label in grp and labels[g] in grp for grp in similar)
                 for g in range(len(labels))):  # fmt: skip
            kind = "similar"
        elif any(ious[g] >= 0.1 for g in range(len(labels)) if labels[g] != label):
            kind = "other"
        else:
            kind = "background"
        out[i][j] = kind
    return out


def random_set(seed, num_images=6, num_classes=4, flagged=0.0):
    g = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        n_obj = int(torch.randint(0, 5, (), generator=g))
        xy = torch.randint(0, 40, (n_obj, 2), generator=g).float()
        wh = torch.randint(4, 20, (n_obj, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, num_classes + 1, (n_obj,), generator=g)
        target = {"boxes": boxes, "labels": labels}
        if flagged:
            target["difficult"] = torch.rand(n_obj, generator=g) < flagged
        targets.append(target)
        # Detections: jittered copies of objects (some relabelled), and random boxes.
        n_det = int(torch.randint(0, 9, (), generator=g))
        if n_obj:
            source = torch.randint(0, n_obj, (n_det,), generator=g)
            det = boxes[source] + torch.randint(-5, 6, (n_det, 4), generator=g).float()
            det_labels = torch.where(torch.rand(n_det, generator=g) < 0.7, labels[source],
                                     torch.randint(1, num_classes + 1, (n_det,), generator=g))
        else:
            det = torch.zeros(0, 4)
            det_labels = torch.zeros(0, dtype=torch.long)
        extra = torch.randint(0, 3, (), generator=g)
        xy = torch.randint(0, 50, (int(extra), 2), generator=g).float()
        det = torch.cat([det, torch.cat([xy, xy + 8], 1)])
        det = torch.cat([det[:, :2], torch.maximum(det[:, 2:], det[:, :2])], 1)  # x2 >= x1
        det_labels = torch.cat([det_labels, torch.randint(1, num_classes + 1, (int(extra),),
                                                          generator=g)])
        # Scores on a coarse grid: many exact ties.
        scores = torch.randint(1, 6, (len(det),), generator=g).float() / 5
        predictions.append({"boxes": det, "scores": scores, "labels": det_labels})
    return predictions, targets


# ---- detection_kinds: hand-made cases ------------------------------------------------------


def test_every_kind_once():
    objects = gt([OBJ, [50, 0, 60, 10], [100, 0, 110, 10], [200, 0, 210, 10]], [1, 2, 3, 1])
    dets = pred([OBJ,                      # correct: claims object 0
                 shifted(OBJ, 2),          # duplicate: IoU 0.67 with the claimed object 0
                 shifted(OBJ, 5),          # localization: IoU 0.33
                 [50, 0, 60, 10],          # similar: on the class-2 object, 1 and 2 similar
                 [100, 0, 110, 10],        # other: on the class-3 object
                 [300, 0, 310, 10],        # background
                 shifted([200, 0, 210, 10], 9)],  # background: IoU 0.05 < 0.1
                [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [1, 1, 1, 1, 1, 1, 1])
    kinds = detection_kinds([dets], [objects], similar=[[1, 2]])
    assert kinds == [["correct", "duplicate", "localization", "similar", "other",
                      "background", "background"]]
    # Without the group, "similar" falls through to "other".
    assert detection_kinds([dets], [objects])[0][3] == "other"


def test_score_order_decides_who_claims_not_input_order():
    objects = gt([OBJ], [1])
    dets = pred([shifted(OBJ, 2), OBJ], [0.3, 0.9], [1, 1])
    assert detection_kinds([dets], [objects]) == [["duplicate", "correct"]]


def test_equal_scores_keep_input_order():
    objects = gt([OBJ], [1])
    dets = pred([shifted(OBJ, 2), OBJ], [0.5, 0.5], [1, 1])
    assert detection_kinds([dets], [objects]) == [["correct", "duplicate"]]


def test_a_correct_detection_claims_its_best_free_object():
    # Two objects of the class; the first detection overlaps both, object 1 more. It takes
    # object 1, so the second detection (on object 0) is correct too.
    a, b = [0, 0, 10, 10], [1, 0, 11, 10]
    objects = gt([a, b], [1, 1])
    dets = pred([[1, 0, 11, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])
    assert detection_kinds([dets], [objects]) == [["correct", "correct"]]
    # Three detections, two objects: the third is a duplicate.
    dets = pred([b, a, a], [0.9, 0.8, 0.7], [1, 1, 1])
    assert detection_kinds([dets], [objects]) == [["correct", "correct", "duplicate"]]


def test_duplicate_across_images_is_not_possible():
    # The same box in two images claims each image's own object.
    objects = gt([OBJ], [1])
    dets = pred([OBJ], [0.9], [1])
    assert detection_kinds([dets, dets], [objects, objects]) == [["correct"], ["correct"]]


def test_kind_rules_take_the_first_that_applies():
    # IoU 0.33 with its own class (localization) beats an exact hit on another class.
    objects = gt([OBJ, shifted(OBJ, 5)], [1, 2])
    dets = pred([OBJ], [0.9], [2])
    assert detection_kinds([dets], [objects]) == [["localization"]]
    # Similar beats other when both apply.
    objects = gt([OBJ, OBJ], [3, 2])
    assert detection_kinds([dets := pred([OBJ], [0.9], [1])], [objects],
                           similar=[[1, 2]]) == [["similar"]]  # fmt: skip
    assert detection_kinds([dets], [objects], similar=[[4, 5], [2, 1]]) == [["similar"]]
    # IoU exactly 0.5 is enough, and exactly 0.1 too.
    half = [0, 0, 10, 10]
    objects = gt([[0, 0, 10, 20]], [1])  # the detection covers half of it: IoU 0.5
    assert detection_kinds([pred([half], [1.0], [1])], [objects]) == [["correct"]]
    tenth = [0, 0, 10, 2]  # IoU 20 / 200 = 0.1
    objects = gt([[0, 0, 10, 20]], [1])
    assert detection_kinds([pred([tenth], [1.0], [1])], [objects]) == [["localization"]]


def test_flagged_objects_are_ignored_not_errors():
    objects = gt([OBJ, [50, 0, 60, 10]], [1, 1], difficult=[True, False])
    dets = pred([OBJ, OBJ, [50, 0, 60, 10], shifted(OBJ, 5)], [0.9, 0.8, 0.7, 0.6],
                [1, 1, 1, 1])  # fmt: skip
    assert detection_kinds([dets], [objects]) == [["ignored", "ignored", "correct",
                                                   "localization"]]  # fmt: skip
    crowd = gt([OBJ], [1], iscrowd=[True])
    assert detection_kinds([pred([OBJ], [0.9], [1])], [crowd]) == [["ignored"]]
    # A flagged object of another class is an object like any other for the lower kinds.
    other = gt([OBJ], [2], difficult=[True])
    assert detection_kinds([pred([OBJ], [0.9], [1])], [other]) == [["other"]]


def test_empty_images_and_empty_predictions():
    empty_pred = pred([], [], [])
    empty_gt = gt([], [])
    assert detection_kinds([], []) == []
    assert detection_kinds([empty_pred], [empty_gt]) == [[]]
    assert detection_kinds([empty_pred], [gt([OBJ], [1])]) == [[]]
    assert detection_kinds([pred([OBJ], [0.5], [1])], [empty_gt]) == [["background"]]
    kinds = detection_kinds([empty_pred, pred([OBJ], [0.5], [1])],
                            [gt([OBJ], [1]), gt([OBJ], [1])])  # fmt: skip
    assert kinds == [[], ["correct"]]


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_the_rules_read_literally(seed):
    predictions, targets = random_set(seed, flagged=0.2 if seed % 2 else 0.0)
    similar = [[1, 2], [3, 4]] if seed % 3 else ()
    assert detection_kinds(predictions, targets, similar) == reference_kinds(
        predictions, targets, similar)


def test_correct_detections_are_voc_true_positives_when_objects_are_apart():
    # Objects far apart: each detection has one candidate, so the greedy claim and VOC's
    # best-overlap rule agree, and correct detections are the true positives.
    boxes = [[30.0 * k, 0, 30.0 * k + 10, 10] for k in range(5)]
    objects = gt(boxes, [1, 2, 1, 2, 1])
    dets = pred([boxes[0], shifted(boxes[0], 2), boxes[1], shifted(boxes[2], 5), boxes[3]],
                [0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 2, 1, 1])  # fmt: skip
    kinds = detection_kinds([dets], [objects])[0]
    assert kinds == ["correct", "duplicate", "correct", "localization", "other"]
    recall = evaluate_voc([dets], [objects])["recall"]
    assert float(recall[1][-1]) == pytest.approx(1 / 3)  # class 1: one of three found
    assert float(recall[2][-1]) == 0.5


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("predictions, targets, error, words", [
    ({"boxes": torch.zeros(0, 4)}, [], TypeError, "predictions must be a list"),
    ([pred([], [], [])], [], ValueError, "one dict per image"),
    ([pred([], [], [])], [[1]], TypeError, "targets[0] must be a dict"),
    ([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.long)}],
     [gt([], [])], ValueError, "missing 'scores'"),
    ([pred([OBJ], [0.5], [1])], [{"boxes": torch.zeros(1, 3), "labels": torch.ones(1)}],
     ValueError, "shape [N, 4]"),
    ([pred([OBJ], [0.5], [1])], [{"boxes": torch.zeros(1, 4, dtype=torch.long),
                                  "labels": torch.ones(1, dtype=torch.long)}],
     TypeError, "floating point"),
    ([pred([OBJ], [0.5], [1])], [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1)}],
     TypeError, "targets[0]['labels'] must be an integer"),
    ([{**pred([OBJ], [0.5], [1]), "labels": torch.ones(2, dtype=torch.long)}], [gt([], [])],
     ValueError, "shape [1]"),
    ([pred([[10, 0, 0, 10]], [0.5], [1])], [gt([], [])], ValueError,
     "predictions[0]['boxes'][0] must be finite xyxy with x2 >= x1"),
    ([pred([], [], []), pred([OBJ], [0.5], [1])],
     [gt([], []), gt([OBJ, [0, 0, float("nan"), 1]], [1, 1])], ValueError,
     "targets[1]['boxes'][1]"),
    ([pred([OBJ], [float("nan")], [1])], [gt([], [])], ValueError, "scores must be finite"),
    ([pred([OBJ], [0.5], [1])], [gt([OBJ], [1], difficult=[True]) | {
        "difficult": torch.tensor([0.5])}], TypeError, "'difficult'"),
])  # fmt: skip
def test_bad_input_is_named(predictions, targets, error, words):
    with pytest.raises(error) as info:
        detection_kinds(predictions, targets)
    assert words in str(info.value)


@pytest.mark.parametrize("similar, words", [
    ("12", "sequence of groups"), ([1, 2], "similar[0] must be a sequence"),
    ([[1, "dog"]], "integer labels"), ([[1, True]], "integer labels"),
])  # fmt: skip
def test_bad_similar_groups(similar, words):
    with pytest.raises(TypeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        detection_kinds([pred([OBJ], [0.5], [1])], [gt([OBJ], [1])], similar)


# ---- kind_shares ---------------------------------------------------------------------------


def test_shares_count_the_top_detections_in_units_of_objects():
    objects = gt([OBJ, [50, 0, 60, 10]], [1, 1])
    dets = pred([OBJ, [300, 0, 310, 10], shifted(OBJ, 5), [50, 0, 60, 10]],
                [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1])  # fmt: skip
    result = kind_shares([dets], [objects], multiples=(0.5, 1, 2, 4))
    assert result["num_objects"] == 2
    assert result["num_detections"] == [1, 2, 4, 4]  # at most the 4 there are
    assert result["shares"]["correct"].tolist() == [1.0, 0.5, 0.5, 0.5]
    assert result["shares"]["background"].tolist() == [0.0, 0.5, 0.25, 0.25]
    assert result["shares"]["localization"].tolist() == [0.0, 0.0, 0.25, 0.25]
    assert result["recall"].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert result["recall_weak"].tolist() == [0.5, 0.5, 1.0, 1.0]


def test_weak_recall_counts_poorly_localized_objects_once():
    objects = gt([OBJ, [50, 0, 60, 10]], [1, 1])
    dets = pred([shifted(OBJ, 5), shifted(OBJ, 5)], [0.9, 0.8], [1, 1])
    result = kind_shares([dets], [objects], multiples=(1,))
    assert result["recall"].tolist() == [0.0]
    assert result["recall_weak"].tolist() == [0.5]


@pytest.mark.parametrize("seed", range(6))
def test_shares_sum_to_one(seed):
    predictions, targets = random_set(seed, num_images=10, flagged=0.2)
    result = kind_shares(predictions, targets, similar=[[1, 2]])
    total = sum(result["shares"][k] for k in KINDS)
    valid = torch.tensor(result["num_detections"]) > 0
    assert torch.allclose(total[valid], torch.ones(int(valid.sum()), dtype=torch.float64))
    assert set(result["shares"]) == set(KINDS)
    assert (result["recall"] <= result["recall_weak"] + 1e-12).all()


def test_shares_of_a_group_of_classes():
    objects = gt([OBJ, [50, 0, 60, 10]], [1, 2])
    dets = pred([OBJ, [50, 0, 60, 10], [300, 0, 310, 10]], [0.9, 0.8, 0.7], [1, 1, 2])
    result = kind_shares([dets], [objects], labels=[2], multiples=(1, 2))
    assert result["num_objects"] == 1
    assert result["shares"]["background"].tolist() == [1.0, 1.0]  # its only detection
    assert result["recall"].tolist() == [0.0, 0.0]
    both = kind_shares([dets], [objects], labels=[1], multiples=(1, 2))
    assert both["shares"]["correct"].tolist() == [1.0, 0.5]
    assert both["shares"]["other"].tolist() == [0.0, 0.5]


def test_shares_of_empty_sets_are_nan_not_errors():
    result = kind_shares([pred([], [], [])], [gt([], [])])
    assert all(math.isnan(v) for v in result["shares"]["correct"].tolist())
    assert result["num_objects"] == 0
    result = kind_shares([pred([], [], [])], [gt([OBJ], [1])], multiples=(1,))
    assert result["num_detections"] == [0] and result["recall"].tolist() == [0.0]
    with pytest.raises(ValueError, match="increasing"):
        kind_shares([], [], multiples=(2, 1))
    with pytest.raises(TypeError, match="labels"):
        kind_shares([], [], labels="cat")


# ---- by size and aspect ratio --------------------------------------------------------------


def test_bins_are_percentiles_within_each_class():
    # Class 1: ten squares of sides 1..10; class 2: one object; one difficult object.
    boxes = [[0, 0, s, s] for s in range(1, 11)] + [[0, 0, 3, 3], [0, 0, 50, 50]]
    objects = gt(boxes, [1] * 10 + [2, 1], difficult=[False] * 11 + [True])
    bins = characteristic_bins([objects], "size")[0].tolist()
    assert bins == [0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 2, -1]
    # Twenty objects: 2, 4, 8, 4, 2 per bin; equal values share a bin.
    many = gt([[0, 0, s, 1] for s in range(1, 21)], [1] * 20)
    counts = torch.bincount(characteristic_bins([many], "size")[0], minlength=5)
    assert counts.tolist() == [2, 4, 8, 4, 2]
    same = characteristic_bins([gt([[0, 0, 2, 2]] * 7, [1] * 7)], "size")[0]
    assert same.tolist() == [2] * 7


def test_aspect_bins_go_from_tall_to_wide():
    boxes = [[0, 0, w, 10] for w in (1, 2, 5, 10, 20, 40, 80, 100, 150, 200)]
    objects = gt(boxes[::-1], [1] * 10)  # the input order does not matter
    bins = characteristic_bins([objects], "aspect")[0].tolist()
    assert bins == [4, 3, 3, 2, 2, 2, 2, 1, 1, 0]
    zero_height = characteristic_bins([gt([[0, 0, 5, 0], [0, 0, 1, 1]], [1, 1])], "aspect")
    assert zero_height[0].tolist() == [3, 1]  # width / 0 is the widest
    with pytest.raises(ValueError, match="'size' or 'aspect'"):
        characteristic_bins([objects], "colour")


def test_ap_by_size_ignores_objects_outside_the_bin():
    # Class 1: ten objects, sides 1..10, far apart. Only the five largest are detected,
    # plus one background detection with the lowest score.
    boxes = [[100.0 * s, 0, 100.0 * s + s, s] for s in range(1, 11)]
    objects = gt(boxes, [1] * 10)
    dets = pred(boxes[5:] + [[5000, 0, 5010, 10]], [0.9, 0.8, 0.7, 0.6, 0.5, 0.1],
                [1] * 6)  # fmt: skip
    result = ap_by_characteristic([dets], [objects], "size")
    assert result["bins"] == ["XS", "S", "M", "L", "XL", "all"]
    assert result["num_objects"][0].tolist() == [1, 2, 4, 2, 1, 10]
    # XS, S: nothing found; M holds sides 4..7: 6 and 7 found; L, XL: all found.
    assert result["recall"][0].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 0.5]
    # L: its two objects come first (the other true positives are ignored): AP 1.
    assert result["ap"][0, 3] == 1.0 and result["ap"][0, 4] == 1.0
    assert result["ap"][0, 0] == 0.0
    assert result["ap"][0, 5] == pytest.approx(evaluate_voc([dets], [objects])["map"])
    # Normalized AP with N = the class's count equals plain AP on all objects.
    assert result["normalized_count"] == 10
    assert result["ap_n"][0, 5] == pytest.approx(float(result["ap"][0, 5]))
    text = format_by_characteristic(result, ["background", "thing"])
    assert "thing" in text and "XL" in text and "Objects by object size" in text


def test_ap_by_characteristic_on_empty_and_missing_bins():
    result = ap_by_characteristic([pred([], [], [])], [gt([], [])], "aspect")
    assert result["classes"] == [] and result["ap"].shape == (0, 6)
    one = ap_by_characteristic([pred([OBJ], [0.9], [1])], [gt([OBJ], [1])], "size")
    assert math.isnan(float(one["ap"][0, 0])) and one["ap"][0, 2] == 1.0


# ---- tables, figures, the command ----------------------------------------------------------


def test_tables_and_figures():
    predictions, targets = random_set(3, num_images=12)
    shares = kind_shares(predictions, targets, similar=[[1, 2]])
    text = format_kind_shares({"all classes": shares,
                               "1 and 2": kind_shares(predictions, targets, labels=[1, 2])})
    assert "all classes" in text and "1 and 2" in text and "x objects" in text
    fig = plot_kind_shares(shares, "title")
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Sim: similar class" in labels and "recall, IoU >= 0.1" in labels
    by = [ap_by_characteristic(predictions, targets, k) for k in ("size", "aspect")]
    fig = plot_by_characteristic(by, ["bg", "a", "b", "c", "d"])
    assert len(fig.axes) == 2 and "aspect ratio" in fig.axes[1].get_title()
    with pytest.raises(TypeError):
        plot_kind_shares({"x": 1})


@pytest.mark.slow
def test_diagnose_command_on_the_shipped_checkpoint(tmp_path, capsys):
    assert diagnose_main(["--checkpoint", "lessons/assets/shapes_tiny.pt", "--out",
                          str(tmp_path), "--max-images", "24", "--similar",
                          "horizontal bar,vertical bar", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Error kinds of the top-ranked detections, all classes" in out
    assert "horizontal bar, vertical bar" in out and "by aspect ratio" in out
    assert (tmp_path / "error_kinds.png").stat().st_size > 10_000
    assert (tmp_path / "by_characteristic.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="not a class"):
        diagnose_main(["--checkpoint", "lessons/assets/shapes_tiny.pt", "--out",
                       str(tmp_path), "--max-images", "1", "--similar", "circle,hexagon"])
