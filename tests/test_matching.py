import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlearn.anchors import SSD300_VOC, PriorConfig, default_boxes
from ssdlearn.boxes import box_iou, cxcywh_to_xyxy
from ssdlearn.matching import _first_argmax_, _iou_with_priors, decode, encode, match, match_batch

# A small tiling for the loop references: 4x4, 2x2 and 1x1 maps, 82 default boxes.
SMALL = PriorConfig(
    image_size=60, feature_maps=(4, 2, 1), min_sizes=(12, 24, 45), max_sizes=(24, 45, 60),
    aspect_ratios=((2,), (2,), ()),
)  # fmt: skip


@pytest.fixture(scope="module")
def small_priors() -> torch.Tensor:
    return default_boxes(SMALL)


@pytest.fixture(scope="module")
def ssd300_priors() -> torch.Tensor:
    return default_boxes(SSD300_VOC)


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """n valid xyxy boxes inside [0, 1] with positive width and height."""
    corners = torch.rand(n, 2, 2, generator=generator, dtype=dtype)
    low, high = corners.min(dim=1).values, corners.max(dim=1).values
    return torch.cat([low, high + 1e-3], dim=-1)


def random_objects(g: int, priors: torch.Tensor, generator: torch.Generator):
    """g objects: random boxes, with some exact ties mixed in (copies of another object, or
    of a default box), and random classes 1..20."""
    boxes = random_boxes(g, generator)
    for i in range(1, g):
        kind = torch.randint(4, (1,), generator=generator).item()
        if kind == 0:  # a duplicate object: ties on every default box
            boxes[i] = boxes[torch.randint(i, (1,), generator=generator).item()]
        elif kind == 1:  # exactly a default box: IoU 1, shared with its duplicates
            p = torch.randint(priors.shape[0], (1,), generator=generator).item()
            boxes[i] = cxcywh_to_xyxy(priors[p])
    labels = torch.randint(1, 21, (g,), generator=generator)
    return boxes, labels


def reference_match(gt_boxes, gt_labels, priors, iou_threshold):
    """The paper's rule with plain Python loops, ties spelled out: the first maximal index
    wins a max; a later object takes a shared best default box; IoU 0 forces nothing."""
    priors_xyxy = cxcywh_to_xyxy(priors)
    num_objects, num_priors = gt_boxes.shape[0], priors.shape[0]
    if num_objects == 0:
        return [0] * num_priors, priors_xyxy.tolist()
    iou = box_iou(gt_boxes, priors_xyxy).tolist()
    labels, assigned = [], []
    for p in range(num_priors):
        best_g = 0
        for g in range(num_objects):
            if iou[g][p] > iou[best_g][p]:
                best_g = g
        assigned.append(best_g)
        labels.append(int(gt_labels[best_g]) if iou[best_g][p] >= iou_threshold else 0)
    for g in range(num_objects):  # in order, so a later object overwrites an earlier one
        best_p = 0
        for p in range(num_priors):
            if iou[g][p] > iou[g][best_p]:
                best_p = p
        if iou[g][best_p] > 0:
            assigned[best_p] = g
            labels[best_p] = int(gt_labels[g])
    return labels, [gt_boxes[g].tolist() for g in assigned]


def pad(images):
    """A padded batch from a list of (boxes[G_i, 4], labels[G_i]); padding is label -1."""
    most = max(boxes.shape[0] for boxes, _ in images)
    gt_boxes = torch.zeros(len(images), most, 4)
    gt_labels = torch.full((len(images), most), -1)
    for i, (boxes, labels) in enumerate(images):
        gt_boxes[i, : len(boxes)] = boxes
        gt_labels[i, : len(labels)] = labels
    return gt_boxes, gt_labels


# ---- match: the rule, by hand and against the loop reference --------------------------


def test_match_by_hand():
    # Three default boxes side by side; one object covering the first, mostly.
    priors = torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.6, 1.0]])
    # IoU with the three: 0.5/0.6 = 0.83, 0.35/0.75 = 0.47, 0.1/1.0 = 0.1
    labels, boxes = match(gt, torch.tensor([7]), priors)
    assert labels.tolist() == [7, 0, 0]
    assert torch.equal(boxes, gt.expand(3, 4))  # background gets its best object too
    labels, _ = match(gt, torch.tensor([7]), priors, iou_threshold=0.4)
    assert labels.tolist() == [7, 7, 0]


def test_best_prior_is_forced_below_threshold():
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.2, 0.2]])  # IoU 0.04, far below 0.5
    labels, boxes = match(gt, torch.tensor([3]), priors)
    assert labels.tolist() == [3]
    assert torch.equal(boxes, gt)


def test_without_the_best_box_step_only_the_threshold_counts(small_priors):
    priors = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    gt = torch.tensor([[0.0, 0.0, 0.2, 0.2]])
    labels, _ = match(gt, torch.tensor([3]), priors, best_box=False)
    assert labels.tolist() == [0]  # IoU 0.04: no match without step 1
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        boxes, gt_labels = random_objects(5, small_priors, g)
        labels, _ = match(boxes, gt_labels, small_priors, best_box=False)
        best_iou, best_gt = box_iou(boxes, cxcywh_to_xyxy(small_priors)).max(dim=0)
        want = torch.where(best_iou >= 0.5, gt_labels[best_gt], 0)
        assert torch.equal(labels, want)
        gt_boxes, padded_labels = pad([(boxes, gt_labels), (boxes[:2], gt_labels[:2])])
        batch_labels, _ = match_batch(gt_boxes, padded_labels, small_priors, best_box=False)
        assert torch.equal(batch_labels[0], want)
        assert torch.equal(batch_labels[1], match(boxes[:2], gt_labels[:2], small_priors,
                                                  best_box=False)[0])


def test_shared_best_prior_goes_to_the_later_object():
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.9, 0.9, 0.2, 0.2]])
    a = torch.tensor([0.3, 0.3, 0.6, 0.6])  # both objects' best default box is prior 0
    b = torch.tensor([0.4, 0.4, 0.7, 0.7])
    labels, boxes = match(torch.stack([a, b]), torch.tensor([1, 2]), priors)
    assert labels[0] == 2 and torch.equal(boxes[0], b)
    labels, boxes = match(torch.stack([b, a]), torch.tensor([2, 1]), priors)
    assert labels[0] == 1 and torch.equal(boxes[0], a)


def test_equal_iou_goes_to_the_lowest_index():
    # Two identical default boxes: the object's best is the first one.
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    gt = torch.tensor([[0.45, 0.45, 0.5, 0.5]])  # IoU 1/16 with both: only forced
    labels, _ = match(gt, torch.tensor([4]), priors)
    assert labels.tolist() == [4, 0, 0]
    # Two identical objects over the threshold: every default box takes the first one.
    gt = torch.tensor([[0.4, 0.4, 0.6, 0.6], [0.4, 0.4, 0.6, 0.6]])
    labels, _ = match(gt, torch.tensor([1, 2]), priors)
    # prior 0: best of both objects, the later (label 2) wins it; prior 1: first object.
    assert labels.tolist() == [2, 1, 0]


def test_object_overlapping_nothing_is_not_forced():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    gt = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.3, 0.3, 0.3, 0.3]])  # far away; zero area
    labels, boxes = match(gt, torch.tensor([1, 2]), priors)
    assert labels.tolist() == [0]
    assert torch.isfinite(encode(boxes, priors)).all()


def test_no_objects_gives_all_background(small_priors):
    labels, boxes = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), small_priors)
    assert labels.shape == (82,) and labels.dtype == torch.long and (labels == 0).all()
    assert torch.equal(boxes, cxcywh_to_xyxy(small_priors))
    # A default box's own box encodes to 0 (up to rounding through xyxy).
    torch.testing.assert_close(encode(boxes, small_priors), torch.zeros(82, 4))


@pytest.mark.parametrize("iou_threshold", [0.5, 0.3, 0.7])
def test_match_equals_loop_reference(small_priors, iou_threshold):
    g = torch.Generator().manual_seed(int(iou_threshold * 10))
    for _ in range(60):
        num = torch.randint(0, 7, (1,), generator=g).item()
        boxes, labels = random_objects(num, small_priors, g)
        got_labels, got_boxes = match(boxes, labels, small_priors, iou_threshold)
        want_labels, want_boxes = reference_match(boxes, labels, small_priors, iou_threshold)
        assert got_labels.tolist() == want_labels
        assert got_boxes.tolist() == want_boxes


def test_every_object_gets_a_default_box(ssd300_priors):
    # Distinct random objects on SSD300: none is left out (shared best boxes are rare; the
    # check skips objects whose best box a later object took).
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        boxes = random_boxes(8, g)
        labels = torch.arange(1, 9)
        got, matched = match(boxes, labels, ssd300_priors)
        best = box_iou(boxes, cxcywh_to_xyxy(ssd300_priors)).argmax(dim=1)
        for i in range(8):
            if not (best[i + 1 :] == best[i]).any():
                assert (got == labels[i]).any()
                assert got[best[i]] == labels[i] and torch.equal(matched[best[i]], boxes[i])
        # A positive default box regresses to its own object's box.
        positive = got > 0
        assert torch.equal(matched[positive], boxes[got[positive] - 1])


# ---- match_batch: the same, for a padded batch -----------------------------------------


@pytest.mark.parametrize("which", ["small", "ssd300"])
def test_match_batch_equals_match_per_image(which, small_priors, ssd300_priors):
    priors = small_priors if which == "small" else ssd300_priors
    g = torch.Generator().manual_seed(7)
    for _ in range(8):
        images = []
        for _ in range(6):
            num = torch.randint(0, 8, (1,), generator=g).item()
            images.append(random_objects(num, priors, g))
        images[0] = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))  # no objects
        gt_boxes, gt_labels = pad(images)
        labels, matched = match_batch(gt_boxes, gt_labels, priors)
        assert labels.shape == (6, priors.shape[0]) and matched.shape == (6, priors.shape[0], 4)
        for i, (boxes, image_labels) in enumerate(images):
            want_labels, want_boxes = match(boxes, image_labels, priors)
            assert torch.equal(labels[i], want_labels)
            assert torch.equal(matched[i], want_boxes)


def test_padding_content_is_ignored(ssd300_priors):
    g = torch.Generator().manual_seed(11)
    images = [random_objects(n, ssd300_priors, g) for n in (1, 5, 0, 3)]
    gt_boxes, gt_labels = pad(images)
    garbage = gt_boxes.clone()
    padding = gt_labels == -1
    garbage[padding] = random_boxes(int(padding.sum()), g)  # valid boxes right on objects
    a = match_batch(gt_boxes, gt_labels, ssd300_priors)
    b = match_batch(garbage, gt_labels, ssd300_priors)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0][2] == 0).all()


def test_match_batch_with_no_objects_at_all(small_priors):
    labels, matched = match_batch(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long),
                                  small_priors)  # fmt: skip
    assert labels.shape == (3, 82) and (labels == 0).all()
    assert torch.equal(matched, cxcywh_to_xyxy(small_priors).expand(3, -1, -1))


def test_match_batch_float64_follows_input(small_priors):
    g = torch.Generator().manual_seed(5)
    gt_boxes, gt_labels = pad([random_objects(n, small_priors, g) for n in (3, 2)])
    labels, matched = match_batch(gt_boxes.double(), gt_labels, small_priors)
    assert matched.dtype == torch.float64 and labels.dtype == torch.long


def test_hot_path_has_no_host_sync(ssd300_priors):
    # On the meta device a tensor has no values: .item(), .tolist(), bool(tensor) and
    # nonzero all raise, so this runs only if nothing reads a value back.
    priors = ssd300_priors.to("meta")
    gt_boxes = torch.empty(4, 5, 4, device="meta")
    gt_labels = torch.empty(4, 5, dtype=torch.long, device="meta")
    labels, matched = match_batch(gt_boxes, gt_labels, priors, check=False)
    target = encode(matched, priors, check=False)
    assert labels.shape == (4, 8732) and target.shape == (4, 8732, 4)
    assert decode(target, priors, check=False).shape == (4, 8732, 4)


def test_fast_iou_is_box_iou_exactly(ssd300_priors):
    # match and match_batch use a faster IoU; it must give box_iou's numbers bit for bit.
    g = torch.Generator().manual_seed(17)
    priors_xyxy = cxcywh_to_xyxy(ssd300_priors)
    boxes = torch.cat([random_boxes(30, g), priors_xyxy[::997], torch.zeros(1, 4)])
    assert torch.equal(_iou_with_priors(boxes, priors_xyxy), box_iou(boxes, priors_xyxy))
    batch = boxes[:24].view(3, 8, 4)
    assert torch.equal(_iou_with_priors(batch, priors_xyxy), box_iou(batch, priors_xyxy))
    half = _iou_with_priors(boxes.half(), priors_xyxy.half())  # computed in float32
    assert half.dtype == torch.float32
    assert torch.equal(half, box_iou(boxes.half().float(), priors_xyxy.half().float()))


def test_kept_iou_planes_never_leak_into_results(ssd300_priors):
    # On the CPU match and match_batch compute their IoU in planes kept between calls.
    # Results must not alias them: later calls, of other sizes and dtypes, change nothing.
    g = torch.Generator().manual_seed(3)
    first = match_batch(random_boxes(12, g).view(3, 4, 4), torch.ones(3, 4, dtype=torch.long),
                        ssd300_priors)
    kept = [t.clone() for t in first]
    for shape in [(5, 7), (1, 1), (2, 2)]:
        boxes = random_boxes(shape[0] * shape[1], g).view(*shape, 4)
        labels = torch.full(shape, 2)
        match_batch(boxes.double(), labels, ssd300_priors.double())
        match_batch(boxes, labels, ssd300_priors)
        match(boxes[0], labels[0], ssd300_priors)
    assert all(torch.equal(a, b) for a, b in zip(first, kept))
    # and a larger batch after a smaller one still equals match per image
    boxes, labels = random_boxes(40, g).view(8, 5, 4), torch.randint(1, 4, (8, 5), generator=g)
    got_labels, got_boxes = match_batch(boxes, labels, ssd300_priors)
    for i in range(8):
        want_labels, want_boxes = match(boxes[i], labels[i], ssd300_priors)
        assert torch.equal(got_labels[i], want_labels) and torch.equal(got_boxes[i], want_boxes)


def test_match_batch_in_threads_equals_one_thread(ssd300_priors):
    # The kept planes are per thread: concurrent calls do not share them.
    from concurrent.futures import ThreadPoolExecutor

    g = torch.Generator().manual_seed(4)
    batches = [(random_boxes(24, g).view(4, 6, 4), torch.randint(1, 5, (4, 6), generator=g))
               for _ in range(6)]
    want = [match_batch(b, lab, ssd300_priors) for b, lab in batches]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda item: match_batch(*item, ssd300_priors), batches * 3))
    for i, (labels, boxes) in enumerate(got):
        assert torch.equal(labels, want[i % 6][0]) and torch.equal(boxes, want[i % 6][1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_first_argmax_is_torch_max(rows, size, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 3, (2, rows, size), generator=g).float()  # many ties
    for dim in (1, 2):
        want = values.max(dim=dim)
        got = _first_argmax_(values.clone(), values.amax(dim, keepdim=True), dim)
        assert torch.equal(got, want.indices)


# ---- encode / decode --------------------------------------------------------------------


def test_encode_by_hand():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    box = torch.tensor([[0.42, 0.3, 0.62, 0.9]])  # centre (0.52, 0.6), size (0.2, 0.6)
    want = torch.tensor([[0.02 / 0.02, 0.1 / 0.04, 0.0, math.log(1.5) / 0.2]])
    torch.testing.assert_close(encode(box, priors), want)
    torch.testing.assert_close(decode(want, priors), box)


def test_encode_matches_torchvision_box_coder(ssd300_priors):
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(8732, g)
    coder = torchvision.models.detection._utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    want = coder.encode_single(boxes, cxcywh_to_xyxy(ssd300_priors))
    torch.testing.assert_close(encode(boxes, ssd300_priors), want, rtol=1e-4, atol=1e-4)


def test_encode_is_finite_for_degenerate_boxes(small_priors):
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.0, 0.5, 1.0, 0.5]]).repeat(41, 1)
    loc = encode(boxes, small_priors)
    assert torch.isfinite(loc).all()


def test_encode_keeps_leading_dims(small_priors):
    boxes = cxcywh_to_xyxy(small_priors).expand(2, 3, -1, -1)
    torch.testing.assert_close(encode(boxes, small_priors), torch.zeros(2, 3, 82, 4))


finite = st.floats(-3, 3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite, finite), min_size=82, max_size=82))
def test_decode_then_encode_round_trip(values):
    priors = default_boxes(SMALL, dtype=torch.float64)
    loc = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(encode(decode(loc, priors), priors), loc)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_encode_then_decode_round_trip(seed):
    priors = default_boxes(SMALL, dtype=torch.float64)
    boxes = random_boxes(82, torch.Generator().manual_seed(seed), torch.float64)
    torch.testing.assert_close(decode(encode(boxes, priors), priors), boxes)


# ---- bad input --------------------------------------------------------------------------


def test_bad_input_errors(small_priors):
    one = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    label = torch.tensor([1])
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        match(one[0], label, small_priors)
    with pytest.raises(TypeError, match="gt_boxes must be a floating-point"):
        match(one.long(), label, small_priors)
    with pytest.raises(ValueError, match="x2 >= x1"):
        match(torch.tensor([[0.5, 0.1, 0.1, 0.5]]), label, small_priors)
    with pytest.raises(ValueError, match="finite"):
        match(torch.tensor([[0.1, 0.1, float("nan"), 0.5]]), label, small_priors)
    with pytest.raises(TypeError, match="gt_labels must be an int64"):
        match(one, label.float(), small_priors)
    with pytest.raises(ValueError, match="gt_labels must have shape"):
        match(one, torch.tensor([1, 2]), small_priors)
    with pytest.raises(ValueError, match="0 is background"):
        match(one, torch.tensor([0]), small_priors)
    with pytest.raises(ValueError, match="priors must have shape"):
        match(one, label, small_priors[None])
    with pytest.raises(ValueError, match="w > 0"):
        match(one, label, torch.tensor([[0.5, 0.5, 0.0, 0.1]]))
    with pytest.raises(ValueError, match="iou_threshold"):
        match(one, label, small_priors, iou_threshold=1.5)
    with pytest.raises(TypeError, match="gt_boxes must be a torch.Tensor"):
        match_batch([[0.1, 0.1, 0.5, 0.5]], label, small_priors)
    with pytest.raises(ValueError, match=r"\[B, G, 4\]"):
        match_batch(one, label, small_priors)
    with pytest.raises(ValueError, match="-1 on padding"):
        match_batch(one[None], torch.tensor([[0]]), small_priors)
    with pytest.raises(ValueError, match="gt_labels must have shape"):
        match_batch(one[None], label, small_priors)
    with pytest.raises(ValueError, match="variances"):
        encode(one.expand(82, 4), small_priors, variances=(0.1, 0.0))
    with pytest.raises(ValueError, match="P = 82"):
        encode(one, small_priors)
    with pytest.raises(ValueError, match="P = 82"):
        decode(torch.zeros(81, 4), small_priors)
    with pytest.raises(TypeError, match="loc must be"):
        decode(torch.zeros(82, 4, dtype=torch.long), small_priors)


# ---- CUDA ------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_match_batch_on_cuda_equals_cpu(ssd300_priors):
    g = torch.Generator().manual_seed(13)
    images = [random_objects(n, ssd300_priors, g) for n in (0, 1, 4, 9, 2, 7, 3, 5)]
    gt_boxes, gt_labels = pad(images)
    want = match_batch(gt_boxes, gt_labels, ssd300_priors)
    cuda = [t.cuda() for t in (gt_boxes, gt_labels, ssd300_priors)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        labels, matched = match_batch(*cuda, check=False)
        target = encode(matched, cuda[2], check=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(labels.cpu(), want[0])
    assert torch.equal(matched.cpu(), want[1])
    torch.testing.assert_close(target.cpu(), encode(want[1], ssd300_priors))


def test_return_index_is_the_matched_object_as_in_torchvision():
    from torchvision.models.detection._utils import SSDMatcher

    priors = default_boxes(SSD300_VOC)
    generator = torch.Generator().manual_seed(11)
    centre = torch.rand(5, 2, generator=generator)
    size = 0.05 + 0.5 * torch.rand(5, 2, generator=generator)
    gt = torch.cat([centre - size / 2, centre + size / 2], dim=1).clamp(0, 1)
    labels = torch.tensor([3, 1, 4, 1, 5])
    got_labels, got_boxes, index = match(gt, labels, priors, return_index=True)
    assert torch.equal(got_labels, match(gt, labels, priors)[0])
    positive = index >= 0
    assert torch.equal(positive, got_labels > 0)
    assert torch.equal(labels[index[positive]], got_labels[positive])
    assert torch.equal(gt[index[positive]], got_boxes[positive])
    # torchvision's SSDMatcher: the same objects wherever neither rule hits a tie.
    tv = SSDMatcher(0.5)(box_iou(gt, cxcywh_to_xyxy(priors)))
    assert (tv == index).float().mean() > 0.999
    # A padded batch gives each image's own indices; padding rows are never matched.
    boxes = torch.zeros(2, 5, 4)
    boxes[0], boxes[1, :2] = gt, gt[:2]
    batch_labels = torch.tensor([[3, 1, 4, 1, 5], [3, 1, -1, -1, -1]])
    _, _, batch_index = match_batch(boxes, batch_labels, priors, return_index=True)
    assert torch.equal(batch_index[0], index)
    assert torch.equal(batch_index[1], match(gt[:2], labels[:2], priors, return_index=True)[2])
    # No objects: everything is background, index -1.
    empty = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors, return_index=True)
    assert (empty[2] == -1).all()
    empty = match_batch(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), priors,
                        return_index=True)
    assert empty[2].shape == (2, len(priors)) and (empty[2] == -1).all()
