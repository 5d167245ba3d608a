import pytest
import torch
import torchvision

from ssdlearn.anchors import SSD300_VOC, PriorConfig, default_boxes
from ssdlearn.boxes import cxcywh_to_xyxy
from ssdlearn.detect import batched_nms, detect, nms, to_pixels
from ssdlearn.matching import decode

SMALL = PriorConfig(
    image_size=60, feature_maps=(4, 2, 1), min_sizes=(12, 24, 45), max_sizes=(24, 45, 60),
    aspect_ratios=((2,), (2,), ()),
)  # fmt: skip


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """n valid xyxy boxes inside [0, 1], with many overlaps."""
    centre = torch.rand(n, 2, generator=generator, dtype=dtype)
    size = 0.05 + 0.4 * torch.rand(n, 2, generator=generator, dtype=dtype)
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def random_outputs(batch, num_priors, num_classes, generator, background=4.0):
    """Random loc offsets and class logits where a few percent of (box, class) pass 0.01."""
    loc = 0.5 * torch.randn(batch, num_priors, 4, generator=generator)
    conf = torch.randn(batch, num_priors, num_classes, generator=generator)
    conf[..., 0] += background
    return loc, conf


# ---- nms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 100, 400])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.1, 0.3, 0.45, 0.5, 0.7, 0.95, 1.0])
def test_nms_equals_torchvision(n, iou_threshold):
    generator = torch.Generator().manual_seed(n * 100 + int(iou_threshold * 100))
    for _ in range(5):
        boxes = random_boxes(n, generator)
        scores = torch.rand(n, generator=generator)
        expected = torchvision.ops.nms(boxes, scores, iou_threshold)
        kept = nms(boxes, scores, iou_threshold)
        assert kept.dtype == torch.long
        torch.testing.assert_close(kept, expected, rtol=0, atol=0)


def test_nms_equal_scores_like_torchvision_on_cpu():
    generator = torch.Generator().manual_seed(8)
    for n in (5, 60, 300):
        boxes = random_boxes(n, generator)
        scores = (torch.rand(n, generator=generator) * 5).round() / 5  # many equal scores
        torch.testing.assert_close(nms(boxes, scores, 0.3),
                                   torchvision.ops.nms(boxes, scores, 0.3))  # fmt: skip


def test_nms_float64_and_integer_coordinates():
    generator = torch.Generator().manual_seed(1)
    boxes = (random_boxes(200, generator, torch.float64) * 50).round()  # many exact ties in IoU
    boxes[:, 2:] += 1
    scores = torch.rand(200, generator=generator, dtype=torch.float64)
    for threshold in (0.0, 0.25, 0.5, 0.8):
        torch.testing.assert_close(nms(boxes, scores, threshold),
                                   torchvision.ops.nms(boxes, scores, threshold))  # fmt: skip


def test_nms_identical_boxes_keeps_the_best():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5]]).repeat(6, 1)
    scores = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.2, 0.4])
    assert nms(boxes, scores, 0.5).tolist() == [1]
    assert nms(boxes, scores, 0.99).tolist() == [1]
    # IoU 1 is not > 1: nothing is suppressed, all come back best first
    assert nms(boxes, scores, 1.0).tolist() == [1, 3, 5, 0, 4, 2]
    assert torchvision.ops.nms(boxes, scores, 1.0).tolist() == [1, 3, 5, 0, 4, 2]


def test_nms_by_hand():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # best
        [1.0, 0.0, 11.0, 10.0],  # IoU 90/110 with the best: suppressed
        [20.0, 20.0, 30.0, 30.0],  # far away: kept
        [5.0, 0.0, 15.0, 10.0],  # IoU 50/150 with the best: kept at 0.45
    ])  # fmt: skip
    scores = torch.tensor([0.9, 0.8, 0.3, 0.7])
    assert nms(boxes, scores, 0.45).tolist() == [0, 3, 2]
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]


def test_nms_empty_and_single():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.2]), 0.5).tolist() == [0]


def test_nms_bad_input():
    boxes, scores = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.5])
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        nms(boxes[0], scores, 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\] = \[1\]"):
        nms(boxes, torch.tensor([0.5, 0.1]), 0.5)
    with pytest.raises(TypeError, match="boxes must be a floating-point"):
        nms(boxes.long(), scores, 0.5)
    with pytest.raises(ValueError, match="x2 >= x1"):
        nms(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), scores, 0.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        nms(boxes, scores, 1.5)
    with pytest.raises(TypeError, match="iou_threshold must be a number"):
        nms(boxes, scores, "0.5")


def test_batched_nms_equals_nms_per_label():
    generator = torch.Generator().manual_seed(2)
    for n in (0, 1, 50, 1500):  # 1500 boxes take torchvision's per-label path on a CPU
        boxes = random_boxes(n, generator)
        scores = torch.rand(n, generator=generator)
        labels = torch.randint(0, 5, (n,), generator=generator)
        kept = batched_nms(boxes, scores, labels, 0.45)
        expected = torch.cat([torch.zeros(0, dtype=torch.long)] + [
            (labels == c).nonzero()[:, 0][nms(boxes[labels == c], scores[labels == c], 0.45)]
            for c in range(5)
        ])  # fmt: skip
        expected = expected[scores[expected].argsort(descending=True)]
        torch.testing.assert_close(kept, expected)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        batched_nms(boxes, scores, labels.float(), 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
        batched_nms(boxes, scores, labels[:-1], 0.5)


# ---- detect --------------------------------------------------------------------------------


def logits(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly these probabilities (rows sum to 1)."""
    return torch.tensor(probabilities, dtype=torch.float64).log()


def hand_built():
    """Four default boxes, zero offsets (so boxes = default boxes) and chosen scores."""
    priors = torch.tensor([
        [0.25, 0.25, 0.2, 0.2],  # A
        [0.26, 0.25, 0.2, 0.2],  # B: IoU 0.9 with A
        [0.75, 0.75, 0.3, 0.3],  # C: far from A and B
        [0.25, 0.25, 0.2, 0.2],  # D: the same box as A
    ], dtype=torch.float64)  # fmt: skip
    conf = logits([
        [0.1, 0.0, 0.9],  # A: class 2 at 0.9
        [0.3, 0.0, 0.7],  # B: class 2 at 0.7 -> suppressed by A
        [0.4, 0.6, 0.0],  # C: class 1 at 0.6
        [0.5, 0.495, 0.005],  # D: class 1 at 0.495 (another class, not suppressed); 0.005
    ])[None]  # fmt: skip
    loc = torch.zeros(1, 4, 4, dtype=torch.float64)
    return loc, conf, priors


def test_detect_by_hand():
    loc, conf, priors = hand_built()
    (out,) = detect(loc, conf, priors)
    xyxy = cxcywh_to_xyxy(priors)
    assert out["labels"].tolist() == [2, 1, 1]
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.6, 0.495], dtype=torch.float64))
    torch.testing.assert_close(out["boxes"], xyxy[[0, 2, 3]])
    assert out["boxes"].dtype == torch.float64 and out["labels"].dtype == torch.long
    # Without class-aware NMS D would go: check it is really kept for being another class.
    (strict,) = detect(loc, conf, priors, nms_threshold=0.95)
    assert strict["labels"].tolist() == [2, 2, 1, 1]


def test_detect_thresholds_and_top_k():
    loc, conf, priors = hand_built()
    (out,) = detect(loc, conf, priors, score_threshold=0.65)
    assert out["labels"].tolist() == [2]
    (out,) = detect(loc, conf, priors, score_threshold=0.001)  # D's class 2 at 0.005 too
    assert out["scores"].tolist() == pytest.approx([0.9, 0.6, 0.495])  # it sits under A
    (out,) = detect(loc, conf, priors, top_k=2)
    assert out["labels"].tolist() == [2, 1]
    (out,) = detect(loc, conf, priors, pre_nms_top_k=1)  # B is not even a candidate
    assert out["labels"].tolist() == [2, 1]


def test_detect_decodes_offsets():
    priors = default_boxes(SMALL)
    generator = torch.Generator().manual_seed(3)
    loc = 0.3 * torch.randn(1, len(priors), 4, generator=generator)
    conf = torch.tensor([20.0, 0.0, 0.0]).repeat(1, len(priors), 1)  # background everywhere
    conf[0, 7, 1] = 40.0  # but one confident box
    (out,) = detect(loc, conf, priors)
    assert out["labels"].tolist() == [1]
    torch.testing.assert_close(out["boxes"], decode(loc, priors)[0, [7]])
    (clipped,) = detect(loc * 20, conf, priors, clip=True)
    assert clipped["boxes"].min() >= 0 and clipped["boxes"].max() <= 1


def test_detect_no_detections():
    priors = default_boxes(SMALL)
    conf = torch.zeros(3, len(priors), 5)
    conf[..., 0] = 20.0  # background everywhere
    out = detect(torch.zeros(3, len(priors), 4), conf, priors)
    assert len(out) == 3
    for image in out:
        assert image["boxes"].shape == (0, 4) and image["boxes"].dtype == torch.float32
        assert image["scores"].shape == (0,) and image["labels"].shape == (0,)
        assert image["labels"].dtype == torch.long
    assert detect(torch.zeros(0, len(priors), 4), torch.zeros(0, len(priors), 5), priors) == []


def reference_detect(loc, conf, priors, score_threshold, nms_threshold, top_k,
                     pre_nms_top_k=None, clip=False):
    """The paper's procedure with loops: per image, per class, threshold, the best
    ``pre_nms_top_k`` (sorted in Python), then NMS, then the best ``top_k`` of the image."""
    results = []
    for image_loc, image_conf in zip(loc, conf):
        boxes = decode(image_loc, priors)
        if clip:
            boxes = boxes.clamp(0, 1)
        scores = image_conf.softmax(-1)
        found = []
        for c in range(1, conf.shape[-1]):
            candidates = (scores[:, c] > score_threshold).nonzero()[:, 0].tolist()
            candidates.sort(key=lambda i: -scores[i, c].item())  # stable: ties by index
            candidates = torch.tensor(candidates[:pre_nms_top_k], dtype=torch.long)
            # torchvision's NMS (test_nms_* check ours against it); ours is O(N^2) in memory.
            kept = torchvision.ops.nms(boxes[candidates], scores[candidates, c], nms_threshold)
            for i in candidates[kept]:
                found.append((scores[i, c].item(), c, boxes[i]))
        found.sort(key=lambda item: -item[0])
        found = found[:top_k]
        results.append({
            "boxes": torch.stack([b for _, _, b in found]) if found else torch.zeros(0, 4),
            "scores": torch.tensor([s for s, _, _ in found]),
            "labels": torch.tensor([c for _, c, _ in found], dtype=torch.long),
        })  # fmt: skip
    return results


@pytest.mark.parametrize("top_k", [5, 200])
@pytest.mark.parametrize("pre_nms_top_k", [None, 400, 7, 1])
@pytest.mark.parametrize("clip", [False, True])
def test_detect_equals_loop_reference(top_k, pre_nms_top_k, clip):
    priors = default_boxes(SMALL)
    generator = torch.Generator().manual_seed(4)
    loc, conf = random_outputs(4, len(priors), 6, generator, background=1.0)
    out = detect(loc, conf, priors, score_threshold=0.05, top_k=top_k,
                 pre_nms_top_k=pre_nms_top_k, clip=clip)  # fmt: skip
    expected = reference_detect(loc, conf, priors, 0.05, 0.45, top_k, pre_nms_top_k, clip)
    for got, want in zip(out, expected):
        assert len(got["scores"]) == len(want["scores"]) > 0
        torch.testing.assert_close(got["scores"], want["scores"])
        torch.testing.assert_close(got["labels"], want["labels"])
        torch.testing.assert_close(got["boxes"], want["boxes"])


def test_detect_batch_equals_per_image():
    priors = default_boxes(SSD300_VOC)
    generator = torch.Generator().manual_seed(5)
    loc, conf = random_outputs(3, len(priors), 21, generator)
    batch = detect(loc, conf, priors, pre_nms_top_k=400)
    for i in range(3):
        (alone,) = detect(loc[i : i + 1], conf[i : i + 1], priors, pre_nms_top_k=400)
        assert len(batch[i]["scores"]) == 200
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(batch[i][key], alone[key])
        assert (batch[i]["scores"][1:] <= batch[i]["scores"][:-1]).all()


def test_detect_equals_torchvision_postprocessing():
    """torchvision's SSD.postprocess_detections (per image and class: threshold, top 400,
    batched_nms, top 200; boxes clipped) on the same outputs, in normalized coordinates."""
    from torchvision.models.detection._utils import BoxCoder

    priors = default_boxes(SSD300_VOC)
    generator = torch.Generator().manual_seed(6)
    loc, conf = random_outputs(2, len(priors), 21, generator)
    coder, priors_xyxy = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), cxcywh_to_xyxy(priors)
    out = detect(loc, conf, priors, pre_nms_top_k=400, clip=True)
    for image_loc, image_conf, got in zip(loc, conf, out):
        boxes = coder.decode_single(image_loc, priors_xyxy).clamp(0, 1)
        scores = image_conf.softmax(-1)
        all_boxes, all_scores, all_labels = [], [], []
        for label in range(1, 21):
            score = scores[:, label]
            keep = score > 0.01
            score, box = score[keep], boxes[keep]
            score, idx = score.topk(min(400, len(score)))
            all_boxes.append(box[idx])
            all_scores.append(score)
            all_labels.append(torch.full_like(idx, label))
        all_boxes, all_scores = torch.cat(all_boxes), torch.cat(all_scores)
        all_labels = torch.cat(all_labels)
        keep = torchvision.ops.batched_nms(all_boxes, all_scores, all_labels, 0.45)[:200]
        torch.testing.assert_close(got["scores"], all_scores[keep])
        torch.testing.assert_close(got["labels"], all_labels[keep])
        torch.testing.assert_close(got["boxes"], all_boxes[keep])


def test_detect_bad_input():
    priors = default_boxes(SMALL)
    p = len(priors)
    loc, conf = torch.zeros(2, p, 4), torch.zeros(2, p, 3)
    with pytest.raises(ValueError, match=r"priors must have one row per default box"):
        detect(loc, conf, priors[:-1])
    with pytest.raises(ValueError, match=r"must agree on B and P"):
        detect(loc, conf[:, :-1], priors)
    with pytest.raises(ValueError, match=r"must agree on B and P"):
        detect(loc, conf[:1], priors)
    with pytest.raises(ValueError, match=r"C >= 2"):
        detect(loc, conf[..., :1], priors)
    with pytest.raises(ValueError, match=r"loc must have shape \[B, P, 4\]"):
        detect(loc[0], conf, priors)
    with pytest.raises(ValueError, match=r"conf must have shape \[B, P, C\]"):
        detect(loc, conf[0], priors)
    with pytest.raises(ValueError, match=r"priors must have shape \[P, 4\]"):
        detect(loc, conf, priors[:, :2])
    with pytest.raises(TypeError, match="conf must be a floating-point"):
        detect(loc, conf.long(), priors)
    with pytest.raises(TypeError, match="loc must be a torch.Tensor"):
        detect(loc.tolist(), conf, priors)
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\]"):
        detect(loc, conf, priors, score_threshold=-0.1)
    with pytest.raises(ValueError, match=r"nms_threshold must be in \[0, 1\]"):
        detect(loc, conf, priors, nms_threshold=2)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        detect(loc, conf, priors, top_k=0)
    with pytest.raises(ValueError, match="pre_nms_top_k must be a positive integer"):
        detect(loc, conf, priors, pre_nms_top_k=1.5)


def test_detect_keeps_400_per_class_by_default():
    # Every box scores the same for class 1: only 400 candidates reach NMS, and with a
    # threshold of 1 (nothing suppressed) exactly 400 come out, the first 400 by index.
    priors = default_boxes(SSD300_VOC)
    conf = torch.zeros(1, len(priors), 2)
    loc = torch.zeros(1, len(priors), 4)
    (out,) = detect(loc, conf, priors, nms_threshold=1.0, top_k=1000)
    assert len(out["scores"]) == 400
    torch.testing.assert_close(out["boxes"], cxcywh_to_xyxy(priors)[:400])
    (every,) = detect(loc, conf, priors, nms_threshold=1.0, top_k=10000, pre_nms_top_k=None)
    assert len(every["scores"]) == len(priors)


def test_to_pixels_is_the_boxes_one():
    from ssdlearn import boxes

    assert to_pixels is boxes.to_pixels


def test_to_pixels():
    boxes = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.25, 0.0, 0.5, 0.1]])
    torch.testing.assert_close(to_pixels(boxes, (200, 400)),
                               torch.tensor([[0.0, 100.0, 400.0, 200.0],
                                             [100.0, 0.0, 200.0, 20.0]]))  # fmt: skip
    torch.testing.assert_close(to_pixels(boxes, 300), boxes * 300)
    assert to_pixels(torch.zeros(0, 4), 300).shape == (0, 4)
    with pytest.raises(ValueError, match="image_size must be a side or"):
        to_pixels(boxes, (1, 2, 3))
    with pytest.raises(ValueError, match="image_size must be positive"):
        to_pixels(boxes, (0, 10))
    with pytest.raises(ValueError, match=r"boxes must have shape \[..., 4\]"):
        to_pixels(boxes[:, :2], 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_detect_on_cuda_equals_cpu():
    priors = default_boxes(SSD300_VOC)
    loc, conf = random_outputs(4, len(priors), 21, torch.Generator().manual_seed(7))
    cpu = detect(loc, conf, priors, pre_nms_top_k=400)
    gpu = detect(loc.cuda(), conf.cuda(), priors.cuda(), pre_nms_top_k=400)
    for a, b in zip(cpu, gpu):
        assert b["boxes"].is_cuda
        torch.testing.assert_close(a["scores"], b["scores"].cpu())
        torch.testing.assert_close(a["labels"], b["labels"].cpu())
        torch.testing.assert_close(a["boxes"], b["boxes"].cpu())


@pytest.mark.parametrize("pre_nms_top_k", [None, 400])
def test_detect_with_many_candidates_equals_loop_reference(pre_nms_top_k):
    # Enough candidates that the CPU path packs the (image, class) groups into several
    # NMS calls, and more than 400 in most classes; the result must not depend on that.
    priors = default_boxes(SSD300_VOC)
    generator = torch.Generator().manual_seed(8)
    loc, conf = random_outputs(1, len(priors), 21, generator, background=3.0)
    passing = conf.softmax(-1)[..., 1:] > 0.01
    assert int(passing.sum()) > 2 * 3000 and (passing.sum(1) > 400).sum() >= 10
    out = detect(loc, conf, priors, top_k=200, pre_nms_top_k=pre_nms_top_k)
    expected = reference_detect(loc, conf, priors, 0.01, 0.45, 200, pre_nms_top_k)
    for got, want in zip(out, expected):
        assert len(got["scores"]) == len(want["scores"]) == 200
        torch.testing.assert_close(got["scores"], want["scores"])
        torch.testing.assert_close(got["labels"], want["labels"])
        torch.testing.assert_close(got["boxes"], want["boxes"])
