import contextlib
import io
import math

import numpy as np
import pytest
import torch

import ssdlearn.metrics.coco as coco_module
from ssdlearn.boxes import box_iou
from ssdlearn.metrics import evaluate_coco, evaluate_voc, voc_ap
from ssdlearn.metrics._common import _pair_iou
from ssdlearn.metrics.coco import _coco_match, _coco_match_readable

# ---- helpers -------------------------------------------------------------------------------


def boxes_from(sizes_and_corners) -> torch.Tensor:
    return torch.tensor(sizes_and_corners, dtype=torch.float64).reshape(-1, 4)


def prediction(boxes, scores, labels) -> dict:
    return {"boxes": boxes_from(boxes), "scores": torch.tensor(scores, dtype=torch.float64),
            "labels": torch.tensor(labels, dtype=torch.long)}  # fmt: skip


def target(boxes, labels, **flags) -> dict:
    out = {"boxes": boxes_from(boxes), "labels": torch.tensor(labels, dtype=torch.long)}
    out.update({k: torch.tensor(v, dtype=torch.bool) for k, v in flags.items()})
    return out


def random_case(seed: int, num_images: int, num_classes: int, crowd: float = 0.0,
                difficult: float = 0.0, crowded_image: bool = False):  # fmt: skip
    """Random ground truth at all sizes (small, medium, large, some exactly on the area
    limits), and detections: jittered copies of objects (IoU all over 0.3..1), exact copies,
    duplicates, random boxes, on a half-pixel grid with some exactly equal scores."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randint(high, shape=()):
        return torch.randint(high, shape, generator=g)

    predictions, targets = [], []
    for i in range(num_images):
        n = int(randint(9))
        # sides up to 40 (small and medium objects) or 20..220 (medium and large)
        side = torch.where(rand(n, 1) < 0.5, 4 + 36 * rand(n, 2), 20 + 200 * rand(n, 2))
        if n:
            side[randint(n)] = 32.0  # area 32^2: small and medium at once in COCO
        xy = 300 * rand(n, 2)
        gt = (torch.cat([xy, xy + side], dim=1) * 2).round() / 2
        labels = randint(num_classes, (n,)) + 1
        t = {"boxes": gt, "labels": labels}
        if crowd:
            t["iscrowd"] = rand(n) < crowd
            if n:  # a crowd region around an object of its class, so that both compete
                j = int(randint(n))
                grow = torch.tensor([-1.0, -1.0, 1.0, 1.0]) * (gt[j, 2:] - gt[j, :2]).repeat(2)
                t["boxes"] = torch.cat([gt, (gt[j] + grow)[None].round()])
                t["labels"] = torch.cat([labels, labels[j : j + 1]])
                t["iscrowd"] = torch.cat([t["iscrowd"], torch.tensor([True])])
        if difficult:
            t["difficult"] = rand(n) < difficult
        targets.append(t)

        m = int(randint(15)) + (130 if crowded_image and i == 0 else 0)
        source = randint(max(n, 1), (m,))
        jitter = (rand(m, 4) - 0.5) * torch.rand(m, 1, generator=g, dtype=torch.float64) * 30
        det = gt[source] + jitter if n else 300 * rand(m, 4)
        exact = rand(m) < 0.2
        if n:
            det[exact] = gt[source[exact]]
        noise = rand(m) < 0.25
        xy = 300 * rand(m, 2)
        det[noise] = torch.cat([xy, xy + 10 + 100 * rand(m, 2)], dim=1)[noise]
        det = (det * 2).round() / 2
        det[:, 2:] = torch.maximum(det[:, 2:], det[:, :2])
        scores = (rand(m) * 50).round() / 50  # ties
        own = labels[source] if n else randint(num_classes, (m,)) + 1
        det_labels = torch.where(rand(m) < 0.8, own, randint(num_classes + 1, (m,)) + 1)
        if crowded_image and i == 0:  # > 100 detections of one class in one image
            det_labels[:120] = 1
        predictions.append({"boxes": det, "scores": scores, "labels": det_labels})
    return predictions, targets


def test_pair_iou_is_box_iou_pair_by_pair():
    g = torch.Generator().manual_seed(0)
    corners = (torch.rand(500, 2, 2, generator=g, dtype=torch.float64) * 20).round()
    a = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    b = a.roll(1, 0)
    torch.testing.assert_close(_pair_iou(a, b), box_iou(a, b).diagonal(), rtol=0, atol=0)
    # a crowd region: intersection over the detection's area
    crowd = _pair_iou(boxes_from([0, 0, 10, 10]), boxes_from([5, 0, 100, 100]),
                      torch.tensor([True]))  # fmt: skip
    assert crowd.tolist() == [0.5]


# ---- voc_ap ----------------------------------------------------------------------------------


def test_voc_ap_by_hand():
    # 3 objects; ranked TP, FP, TP: recall 1/3, 1/3, 2/3 and precision 1, 1/2, 2/3.
    recall, precision = [1 / 3, 1 / 3, 2 / 3], [1.0, 0.5, 2 / 3]
    # 11-point: r = 0, .1, .2, .3 reach precision 1; r = .4, .5, .6 reach 2/3; the rest 0.
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6 / 11)
    # area: [0, 1/3] at precision 1, [1/3, 2/3] at 2/3, [2/3, 1] at 0.
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 9)
    assert voc_ap(torch.tensor(recall), np.array(precision), False) == pytest.approx(5 / 9)


def test_voc_ap_edges():
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0
    assert voc_ap([1.0], [1.0], True) == pytest.approx(1.0)
    assert voc_ap([1.0], [1.0], False) == pytest.approx(1.0)
    # recall exactly 3/10 reaches the point 0.3
    assert voc_ap([0.3], [1.0], True) == pytest.approx(4 / 11)


def test_voc_ap_bad_input():
    with pytest.raises(ValueError, match="same length"):
        voc_ap([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="recall must be non-decreasing"):
        voc_ap([0.5, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"precision must be finite and in \[0, 1\]"):
        voc_ap([0.5], [float("nan")])
    with pytest.raises(ValueError, match="recall must be 1-D"):
        voc_ap([[0.5]], [[1.0]])
    with pytest.raises(TypeError, match="recall must be a 1-D sequence"):
        voc_ap("abc", [1.0])


# ---- evaluate_voc by hand ---------------------------------------------------------------------


def test_voc_perfect_detections():
    targets = [target([[0, 0, 10, 10], [20, 20, 40, 50]], [1, 2]), target([[5, 5, 9, 9]], [1])]
    predictions = [prediction([[20, 20, 40, 50], [0, 0, 10, 10]], [0.9, 0.8], [2, 1]),
                   prediction([[5, 5, 9, 9]], [0.3], [1])]  # fmt: skip
    for use_07 in (True, False):
        result = evaluate_voc(predictions, targets, use_07_metric=use_07)
        assert result["map"] == pytest.approx(1.0)
        assert result["ap_per_class"] == pytest.approx({1: 1.0, 2: 1.0})
        assert result["num_positives"] == {1: 2, 2: 1}


def test_voc_false_positive_ranked_first():
    # 2 objects; FP (0.9), TP (0.8), TP (0.7): precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1])]
    predictions = [prediction([[20, 20, 30, 30], [0, 0, 10, 10], [50, 50, 60, 60]],
                              [0.9, 0.8, 0.7], [1, 1, 1])]  # fmt: skip
    result = evaluate_voc(predictions, targets)
    torch.testing.assert_close(result["precision"][1], torch.tensor([0, 1 / 2, 2 / 3]).double())
    torch.testing.assert_close(result["recall"][1], torch.tensor([0, 1 / 2, 1]).double())
    assert result["map"] == pytest.approx(2 / 3)
    assert evaluate_voc(predictions, targets, use_07_metric=False)["map"] == pytest.approx(2 / 3)


def test_voc_11_point_and_area_differ_by_hand():
    # 3 objects, one never found; TP, FP (a duplicate), TP.
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], [3, 3, 3])]
    predictions = [prediction([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60]],
                              [0.9, 0.8, 0.7], [3, 3, 3])]  # fmt: skip
    assert evaluate_voc(predictions, targets)["map"] == pytest.approx(6 / 11)
    assert evaluate_voc(predictions, targets, use_07_metric=False)["map"] == pytest.approx(5 / 9)


def test_voc_difficult_objects():
    # Object 0 is difficult: a detection on it is ignored, and missing it costs nothing.
    targets = [target([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], difficult=[True, False])]
    on_difficult = prediction([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [1, 1])
    result = evaluate_voc([on_difficult], targets)
    assert result["map"] == pytest.approx(1.0) and result["num_positives"] == {1: 1}
    assert result["precision"][1].tolist() == [1.0]  # the ignored detection is left out
    only_normal = prediction([[50, 50, 60, 60]], [0.8], [1])
    assert evaluate_voc([only_normal], targets)["map"] == pytest.approx(1.0)
    # A second detection on the difficult object is ignored too (no "duplicate" FP).
    twice = prediction([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]], [0.9, 0.85, 0.8],
                       [1, 1, 1])  # fmt: skip
    assert evaluate_voc([twice], targets)["map"] == pytest.approx(1.0)


def test_voc_best_overlap_already_claimed_is_a_false_positive():
    # Both detections overlap object A best; the second also overlaps B by > 0.5, but the
    # devkit only looks at the best one, already claimed: FP.
    a, b = [0, 0, 10, 10], [2, 0, 12, 10]  # IoU(A, B) = 80/120
    det = [0.5, 0, 10.5, 10]  # IoU 95/105 with A (its best), 85/115 with B
    targets = [target([a, b], [1, 1])]
    predictions = [prediction([a, det], [0.9, 0.8], [1, 1])]
    result = evaluate_voc(predictions, targets)
    torch.testing.assert_close(result["precision"][1], torch.tensor([1.0, 0.5]).double())
    assert result["map"] == pytest.approx(6 / 11)  # precision 1 up to recall 1/2, then none


def test_voc_iou_threshold_is_inclusive():
    targets = [target([[0, 0, 10, 10]], [1])]
    half = prediction([[0, 0, 20, 10]], [0.9], [1])  # IoU exactly 0.5
    assert evaluate_voc([half], targets)["map"] == pytest.approx(1.0)
    assert evaluate_voc([half], targets, iou_threshold=0.51)["map"] == 0.0


def test_voc_absent_classes_are_not_averaged():
    targets = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 3], difficult=[False, True])]
    predictions = [prediction([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]],
                              [0.9, 0.95, 0.8], [1, 2, 3])]  # fmt: skip
    result = evaluate_voc(predictions, targets)
    assert result["ap_per_class"] == pytest.approx({1: 1.0})  # 2: no object, 3: only difficult
    assert result["map"] == pytest.approx(1.0)


def test_voc_missed_class_counts_as_zero():
    targets = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])]
    predictions = [prediction([[0, 0, 10, 10]], [0.9], [1])]
    result = evaluate_voc(predictions, targets)
    assert result["ap_per_class"] == pytest.approx({1: 1.0, 2: 0.0})
    assert result["map"] == pytest.approx(0.5)


def test_voc_empty_inputs():
    empty_prediction = prediction([], [], [])
    targets = [target([[0, 0, 10, 10]], [1]), target([], [])]
    result = evaluate_voc([empty_prediction, empty_prediction], targets)
    assert result["map"] == 0.0 and result["ap_per_class"] == {1: 0.0}
    nothing = evaluate_voc([empty_prediction], [target([], [])])
    assert math.isnan(nothing["map"]) and nothing["ap_per_class"] == {}
    assert math.isnan(evaluate_voc([], [])["map"])


# ---- evaluate_voc vs a reference written with loops ----------------------------------------------


def reference_voc(predictions, targets, iou_threshold=0.5, use_07_metric=True):
    """The official devkit (VOCevaldet.m) with plain loops, continuous coordinates."""

    def iou(a, b):
        iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return None  # no overlap: not a candidate
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    def ap(rec, prec):
        if use_07_metric:
            return sum(max([p for r, p in zip(rec, prec) if r >= t / 10], default=0.0)
                       for t in range(11)) / 11  # fmt: skip
        mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1))

    classes = sorted({int(lab) for t in targets for lab, d in
                      zip(t["labels"], t.get("difficult", torch.zeros(len(t["labels"]))))
                      if not d})  # fmt: skip
    aps = {}
    for c in classes:
        gts, npos = {}, 0
        for i, t in enumerate(targets):
            difficult = t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))
            rows = [j for j in range(len(t["labels"])) if t["labels"][j] == c]
            gts[i] = {"boxes": [t["boxes"][j].tolist() for j in rows],
                      "difficult": [bool(difficult[j]) for j in rows],
                      "found": [False] * len(rows)}  # fmt: skip
            npos += sum(not d for d in gts[i]["difficult"])
        dets = [(float(p["scores"][j]), i, p["boxes"][j].tolist())
                for i, p in enumerate(predictions) for j in range(len(p["labels"]))
                if p["labels"][j] == c]  # fmt: skip
        dets.sort(key=lambda d: -d[0])  # stable, as MATLAB's sort
        tp, fp = [], []
        for _, i, box in dets:
            best, jmax = -math.inf, None
            for j, gt in enumerate(gts[i]["boxes"]):
                o = iou(box, gt)
                if o is not None and o > best:
                    best, jmax = o, j
            if best >= iou_threshold:
                if gts[i]["difficult"][jmax]:
                    continue
                if not gts[i]["found"][jmax]:
                    gts[i]["found"][jmax] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        tp, fp = np.cumsum(tp).tolist(), np.cumsum(fp).tolist()
        rec = [x / npos for x in tp]
        prec = [x / (x + y) for x, y in zip(tp, fp)]
        aps[c] = ap(rec, prec)
    return aps


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("use_07_metric", [True, False])
def test_voc_equals_loop_reference(seed, use_07_metric):
    predictions, targets = random_case(seed, num_images=12, num_classes=4, difficult=0.2)
    threshold = (0.5, 0.3, 0.7, 0.5)[seed % 4]
    result = evaluate_voc(predictions, targets, threshold, use_07_metric)
    expected = reference_voc(predictions, targets, threshold, use_07_metric)
    assert result["ap_per_class"] == pytest.approx(expected, abs=1e-12)
    assert result["map"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-12)


def test_voc_float32_and_integer_labels_of_any_kind():
    predictions, targets = random_case(11, num_images=6, num_classes=3)
    expected = evaluate_voc(predictions, targets)
    for p in predictions:
        p["boxes"], p["scores"] = p["boxes"].float(), p["scores"].float()
        p["labels"] = p["labels"].int()
    assert evaluate_voc(predictions, targets)["map"] == pytest.approx(expected["map"])


# ---- evaluate_coco vs pycocotools ----------------------------------------------------------------


def pycocotools_stats(predictions, targets):
    """COCOeval's first six stats on the same boxes, written as COCO json (area: the
    target's ``area`` where given, else w * h)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    categories = set()
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i + 1, "width": 640, "height": 640})
        crowd = t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.bool))
        areas = t.get("area", [None] * len(t["labels"]))
        for box, label, is_crowd, area in zip(t["boxes"].tolist(), t["labels"].tolist(),
                                              crowd.tolist(), list(areas)):
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": label, "bbox": [x1, y1, w, h],
                                "area": w * h if area is None else float(area),
                                "iscrowd": int(is_crowd)})  # fmt: skip
            categories.add(label)
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(),
                                     p["labels"].tolist()):  # fmt: skip
            x1, y1, x2, y2 = box
            results.append({"image_id": i + 1, "category_id": label,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})  # fmt: skip
            categories.add(label)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        names = [{"id": c, "name": str(c)} for c in sorted(categories)]
        gt.dataset = {"images": images, "annotations": annotations, "categories": names}
        gt.createIndex()
        dt = gt.loadRes(results)
        coco_eval = COCOeval(gt, dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    return dict(zip(keys, coco_eval.stats[:6].tolist()))


@pytest.mark.parametrize("seed", range(10))
def test_coco_equals_pycocotools(seed):
    predictions, targets = random_case(100 + seed, num_images=8, num_classes=4,
                                       crowd=0.15, crowded_image=seed % 2 == 0)  # fmt: skip
    result = evaluate_coco(predictions, targets)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", range(4))
def test_coco_size_ranges_use_the_annotations_area(seed):
    """COCO's ``area`` is the segment's, smaller than the box's: an object's size range
    follows it, as in pycocotools."""
    predictions, targets = random_case(300 + seed, num_images=8, num_classes=3, crowd=0.1)
    g = torch.Generator().manual_seed(seed)
    moved = 0
    for t in targets:
        wh = t["boxes"][:, 2:] - t["boxes"][:, :2]
        t["area"] = wh.prod(dim=1) * (0.3 + 0.7 * torch.rand(len(wh), generator=g,
                                                             dtype=torch.float64))
        box_area = wh.prod(dim=1)
        moved += int(((box_area > 32**2) & (t["area"] <= 32**2)).sum()
                     + ((box_area > 96**2) & (t["area"] <= 96**2)).sum())
    assert moved > 0  # some objects change range
    result = evaluate_coco(predictions, targets)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    without = evaluate_coco(predictions, [{k: v for k, v in t.items() if k != "area"}
                                          for t in targets])
    assert any(without[k] != result[k] for k in ("map_small", "map_medium", "map_large"))


def test_coco_area_must_have_one_value_per_box():
    with pytest.raises(ValueError, match=r"targets\[0\]\['area'\] must be a Tensor\[1\]"):
        evaluate_coco([prediction([], [], [])],
                      [{**target([[0, 0, 10, 10]], [1]), "area": torch.tensor([1.0, 2.0])}])


@pytest.mark.parametrize("seed", range(6))
def test_coco_fast_matcher_equals_the_readable_one(seed, monkeypatch):
    """evaluate_coco's batched matcher against the loop written as pycocotools' evaluateImg,
    on the same arguments: crowds, ties, every area range and threshold."""
    calls = []

    def recording(*args):
        calls.append((args, _coco_match(*args)))
        return calls[-1][1]

    monkeypatch.setattr(coco_module, "_coco_match", recording)
    predictions, targets = random_case(200 + seed, num_images=6, num_classes=3,
                                       crowd=0.2, crowded_image=seed % 2 == 1)  # fmt: skip
    evaluate_coco(predictions, targets)
    (args, fast), = calls
    assert (fast >= 0).any()
    assert torch.equal(fast, _coco_match_readable(*args))


def test_coco_many_detections_in_one_image():
    # 150 detections of one class in one image: only the best 100 count.
    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(150, 2, generator=g, dtype=torch.float64) * 500).round()
    boxes = torch.cat([xy, xy + 40], dim=1)
    targets = [{"boxes": boxes[:120].clone(), "labels": torch.ones(120, dtype=torch.long)}]
    scores = torch.linspace(1, 0.01, 150, dtype=torch.float64)
    predictions = [{"boxes": boxes, "scores": scores, "labels": torch.ones(150, dtype=torch.long)}]
    result = evaluate_coco(predictions, targets)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    assert result["map_50"] < 0.9  # recall stops at 100 / 120


def test_coco_perfect_and_absent_area_ranges():
    targets = [target([[0, 0, 10, 10], [100, 100, 250, 300]], [1, 2])]  # a small, a large
    predictions = [prediction([[0, 0, 10, 10], [100, 100, 250, 300]], [0.9, 0.8], [1, 2])]
    result = evaluate_coco(predictions, targets)
    for key in ("map", "map_50", "map_75", "map_small", "map_large"):
        assert result[key] == pytest.approx(1.0), key
    assert result["map_medium"] == -1.0  # no medium object: pycocotools' -1
    assert result["ap_per_class"] == pytest.approx({1: 1.0, 2: 1.0})


def test_coco_crowd_absorbs_detections():
    # A crowd region and one person. Detections inside the crowd are ignored, however many.
    targets = [target([[0, 0, 100, 100], [200, 200, 240, 260]], [1, 1], iscrowd=[True, False])]
    predictions = [prediction([[10, 10, 30, 30], [50, 50, 90, 90], [200, 200, 240, 260]],
                              [0.99, 0.98, 0.5], [1, 1, 1])]  # fmt: skip
    result = evaluate_coco(predictions, targets)
    assert result["map"] == pytest.approx(1.0)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


def test_coco_prefers_an_object_to_a_crowd_or_an_object_of_another_size():
    # The detection covers the person (IoU 0.81) and lies inside the crowd (overlap 1): it
    # takes the person, an object that counts, not the ignored crowd.
    person = [10, 10, 50, 50]
    targets = [target([[0, 0, 100, 100], person], [1, 1], iscrowd=[True, False])]
    predictions = [prediction([[10, 10, 46, 46]], [0.9], [1])]
    result = evaluate_coco(predictions, targets)
    assert result["map_50"] == pytest.approx(1.0)
    # In the "small" range the 40x40 person is ignored, and so is a small detection on it;
    # a small object beside it is found by the second detection.
    targets = [target([person, [12, 12, 40, 40]], [1, 1])]
    predictions = [prediction([[12, 12, 44, 44], [12, 12, 41, 41]], [0.9, 0.8], [1, 1])]
    result = evaluate_coco(predictions, targets)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


def test_equal_overlaps_go_to_the_last_object_in_coco_and_the_first_in_voc():
    # The first detection overlaps A and B equally (90/110); the second overlaps only A.
    a, b = [0, 0, 10, 10], [2, 0, 12, 10]
    targets = [target([a, b], [1, 1])]
    predictions = [prediction([[1, 0, 11, 10], [-3, 0, 7, 10]], [0.9, 0.8], [1, 1])]
    # pycocotools keeps the last of equal IoUs (B), so the second detection finds A.
    result = evaluate_coco(predictions, targets)
    assert result["map_50"] == pytest.approx(1.0)
    expected = pycocotools_stats(predictions, targets)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    # The VOC devkit keeps the first (A): the second detection's best object is taken.
    assert evaluate_voc(predictions, targets)["precision"][1].tolist() == [1.0, 0.5]


def test_coco_empty_inputs():
    empty = prediction([], [], [])
    result = evaluate_coco([empty], [target([[0, 0, 10, 10]], [1])])
    assert result["map"] == 0.0 and result["map_small"] == 0.0 and result["map_large"] == -1.0
    nothing = evaluate_coco([empty, empty], [target([], []), target([], [])])
    assert all(nothing[k] == -1.0 for k in ("map", "map_50", "map_small"))
    assert nothing["ap_per_class"] == {}
    assert evaluate_coco([], [])["map"] == -1.0


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("evaluate", [evaluate_voc, evaluate_coco])
def test_bad_input(evaluate):
    good_p = prediction([[0, 0, 10, 10]], [0.5], [1])
    good_t = target([[0, 0, 10, 10]], [1])
    with pytest.raises(ValueError, match="one dict per image each, got 1 and 2"):
        evaluate([good_p], [good_t, good_t])
    with pytest.raises(TypeError, match="predictions must be a list"):
        evaluate(good_p, [good_t])
    with pytest.raises(TypeError, match=r"targets\[0\] must be a dict"):
        evaluate([good_p], [[1, 2]])
    with pytest.raises(ValueError, match=r"predictions\[0\] is missing 'scores'"):
        evaluate([{"boxes": good_p["boxes"], "labels": good_p["labels"]}], [good_t])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must have shape \[N, 4\]"):
        evaluate([good_p], [{"boxes": torch.zeros(4), "labels": good_t["labels"]}])
    with pytest.raises(ValueError, match=r"predictions\[0\]\['scores'\] must have shape \[1\]"):
        evaluate([dict(good_p, scores=torch.zeros(2))], [good_t])
    with pytest.raises(TypeError, match=r"predictions\[0\]\['labels'\] must be an integer"):
        evaluate([dict(good_p, labels=torch.ones(1))], [good_t])
    with pytest.raises(TypeError, match=r"predictions\[0\]\['boxes'\] must be floating point"):
        evaluate([dict(good_p, boxes=torch.ones(1, 4, dtype=torch.long))], [good_t])
    bad_box = target([[0, 0, 10, 10], [5, 5, 1, 8]], [1, 1])
    with pytest.raises(ValueError, match=r"targets\[1\]: box 1 must be finite xyxy with x2 >= x1"):
        evaluate([good_p, good_p], [good_t, bad_box])
    nan_score = prediction([[0, 0, 10, 10]], [float("nan")], [1])
    with pytest.raises(ValueError, match=r"predictions\[0\]: box 0 must be .* a finite score"):
        evaluate([nan_score], [good_t])


def test_voc_bad_arguments():
    p, t = [prediction([[0, 0, 10, 10]], [0.5], [1])], [target([[0, 0, 10, 10]], [1])]
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\]"):
        evaluate_voc(p, t, iou_threshold=0)
    with pytest.raises(TypeError, match="use_07_metric must be True or False"):
        evaluate_voc(p, t, use_07_metric="yes")
    with pytest.raises(TypeError, match=r"targets\[0\]\['difficult'\] must be a bool"):
        evaluate_voc(p, [dict(t[0], difficult=torch.tensor([0.5]))])
