import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlearn.anchors import SSD300_VOC, default_boxes
from ssdlearn.loss import MultiBoxLoss, hard_negative_mask
from ssdlearn.matching import encode, match_batch


def random_labels(batch: int, num_priors: int, generator: torch.Generator, num_classes=5):
    """Mostly background, some objects, some ignored (-1)."""
    u = torch.rand(batch, num_priors, generator=generator)
    objects = torch.randint(1, num_classes, (batch, num_priors), generator=generator)
    return torch.where(u < 0.1, objects, torch.where(u < 0.15, -1, 0))


def random_inputs(batch, num_priors, num_classes, generator, dtype=torch.float64):
    loc_pred = torch.randn(batch, num_priors, 4, generator=generator, dtype=dtype)
    conf_pred = torch.randn(batch, num_priors, num_classes, generator=generator, dtype=dtype)
    loc_target = torch.randn(batch, num_priors, 4, generator=generator, dtype=dtype)
    labels = random_labels(batch, num_priors, generator, num_classes)
    return loc_pred, conf_pred, loc_target, labels


def reference_loss(loc_pred, conf_pred, loc_target, labels, neg_pos_ratio=3, alpha=1.0):
    """The paper's loss image by image and box by box, with plain Python loops."""
    batch, num_priors = labels.shape
    loc_sum, conf_sum, num_matched = 0.0, 0.0, 0
    for b in range(batch):
        positives = [p for p in range(num_priors) if labels[b, p] > 0]
        negatives = [p for p in range(num_priors) if labels[b, p] == 0]
        ce = {}
        for p in positives + negatives:
            logits = conf_pred[b, p].tolist()
            top = max(logits)
            log_z = top + math.log(sum(math.exp(v - top) for v in logits))
            ce[p] = log_z - logits[max(int(labels[b, p]), 0)]
        # Hardest negatives first; sorted() is stable, so equal losses keep index order.
        keep = min(neg_pos_ratio * len(positives), len(negatives))
        hard = sorted(negatives, key=lambda p: -ce[p])[:keep]
        for p in positives:
            for d in (loc_pred[b, p] - loc_target[b, p]).abs().tolist():
                loc_sum += 0.5 * d * d if d < 1 else d - 0.5
        conf_sum += sum(ce[p] for p in positives + hard)
        num_matched += len(positives)
    if num_matched == 0:
        return 0.0, 0.0
    return alpha * loc_sum / num_matched, conf_sum / num_matched


# ---- hard negative mining --------------------------------------------------------------


def test_hard_negative_mask_by_hand():
    loss = torch.tensor([[0.9, 0.1, 0.5, 0.7, 0.3, 2.0, 0.8]])
    labels = torch.tensor([[0, 0, 0, 0, 0, 1, -1]])  # 1 positive: keep 3 of 5 negatives
    mask = hard_negative_mask(loss, labels)
    # The three highest-loss negatives: 0.9, 0.7, 0.5 at indices 0, 3, 2. Index 6 (0.8)
    # is ignored, index 5 (2.0) a positive.
    assert mask.tolist() == [[True, False, True, True, False, False, False]]


def test_image_without_positives_keeps_no_negatives():
    loss = torch.rand(3, 50)
    labels = torch.zeros(3, 50, dtype=torch.long)
    labels[1, :2] = 1
    mask = hard_negative_mask(loss, labels)
    assert mask.sum(dim=1).tolist() == [0, 6, 0]


def test_equal_losses_go_to_the_lower_index():
    mask = hard_negative_mask(torch.ones(1, 10), torch.tensor([[1] + [0] * 9]), 2)
    assert mask.nonzero()[:, 1].tolist() == [1, 2]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 4), st.integers(1, 60), st.integers(0, 2**31 - 1),
    st.sampled_from([0, 1, 3, 2.5]),
)  # fmt: skip
def test_hard_negative_count_and_choice(batch, num_priors, seed, ratio):
    g = torch.Generator().manual_seed(seed)
    labels = random_labels(batch, num_priors, g)
    loss = torch.randint(0, 4, (batch, num_priors), generator=g).float()  # many ties
    mask = hard_negative_mask(loss, labels, ratio)
    for b in range(batch):
        num_pos = int((labels[b] > 0).sum())
        negatives = labels[b] == 0
        assert int(mask[b].sum()) == min(math.floor(ratio * num_pos), int(negatives.sum()))
        assert not (mask[b] & ~negatives).any()  # never a positive or an ignored box
        kept, dropped = loss[b][mask[b]], loss[b][negatives & ~mask[b]]
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


# ---- MultiBoxLoss -----------------------------------------------------------------------


@pytest.mark.parametrize("neg_pos_ratio, alpha", [(3, 1.0), (1, 0.5), (7, 2.0)])
def test_loss_equals_loop_reference(neg_pos_ratio, alpha):
    g = torch.Generator().manual_seed(neg_pos_ratio)
    criterion = MultiBoxLoss(neg_pos_ratio, alpha)
    for _ in range(5):
        inputs = random_inputs(3, 40, 5, g)
        inputs[3][0] = torch.where(inputs[3][0] > 0, 0, inputs[3][0])  # an image without objects
        loc_loss, conf_loss = criterion(*inputs)
        want_loc, want_conf = reference_loss(*inputs, neg_pos_ratio, alpha)
        torch.testing.assert_close(loc_loss.item(), want_loc)
        torch.testing.assert_close(conf_loss.item(), want_conf)


def test_loss_on_a_real_ssd300_batch():
    priors = default_boxes(SSD300_VOC, dtype=torch.float64)
    gt_boxes = torch.tensor([
        [[0.1, 0.1, 0.4, 0.6], [0.5, 0.2, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]],
        [[0.3, 0.3, 0.35, 0.4], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    ], dtype=torch.float64)  # fmt: skip
    gt_labels = torch.tensor([[4, 12, -1], [7, -1, -1]])
    labels, matched = match_batch(gt_boxes, gt_labels, priors)
    loc_target = encode(matched, priors)
    g = torch.Generator().manual_seed(0)
    loc_pred = torch.randn(2, 8732, 4, generator=g, dtype=torch.float64)
    conf_pred = torch.randn(2, 8732, 21, generator=g, dtype=torch.float64)
    loc_loss, conf_loss = MultiBoxLoss()(loc_pred, conf_pred, loc_target, labels)
    want_loc, want_conf = reference_loss(loc_pred, conf_pred, loc_target, labels)
    torch.testing.assert_close(loc_loss.item(), want_loc)
    torch.testing.assert_close(conf_loss.item(), want_conf)


def test_no_positives_gives_zero_loss_and_zero_gradients():
    g = torch.Generator().manual_seed(1)
    loc_pred, conf_pred, loc_target, _ = random_inputs(2, 30, 4, g, torch.float32)
    loc_pred.requires_grad_(True)
    conf_pred.requires_grad_(True)
    labels = torch.zeros(2, 30, dtype=torch.long)
    labels[1, :5] = -1
    loc_target[0, 0] = 1e30  # a huge filler target on background changes nothing
    loc_loss, conf_loss = MultiBoxLoss()(loc_pred, conf_pred, loc_target, labels)
    assert loc_loss.item() == 0.0 and conf_loss.item() == 0.0
    (loc_loss + conf_loss).backward()
    assert torch.equal(loc_pred.grad, torch.zeros_like(loc_pred))
    assert torch.equal(conf_pred.grad, torch.zeros_like(conf_pred))


def test_ignored_boxes_do_not_count():
    g = torch.Generator().manual_seed(2)
    loc_pred, conf_pred, loc_target, labels = random_inputs(2, 40, 5, g)
    before = MultiBoxLoss()(loc_pred, conf_pred, loc_target, labels)
    ignored = labels == -1
    assert ignored.any()
    conf_pred[ignored] = 100.0 * torch.randn_like(conf_pred[ignored])
    loc_pred[ignored] = 100.0
    after = MultiBoxLoss()(loc_pred, conf_pred, loc_target, labels)
    assert before[0].item() == after[0].item() and before[1].item() == after[1].item()


def test_gradients_match_reference_autograd():
    g = torch.Generator().manual_seed(4)
    loc_pred, conf_pred, loc_target, labels = random_inputs(2, 25, 3, g)
    loc_pred.requires_grad_(True)
    conf_pred.requires_grad_(True)
    loc_loss, conf_loss = MultiBoxLoss()(loc_pred, conf_pred, loc_target, labels)
    (loc_loss + conf_loss).backward()
    # The same loss by masks the reference chose: grads flow only to positives and the
    # kept negatives, scaled by 1/N.
    positive = labels > 0
    ce = torch.nn.functional.cross_entropy(
        conf_pred.detach().reshape(-1, 3), labels.clamp(min=0).reshape(-1), reduction="none"
    )
    hard = hard_negative_mask(ce.view(2, 25), labels)
    used = positive | hard
    assert (conf_pred.grad.abs().sum(-1) > 0).eq(used).all()
    assert (loc_pred.grad.abs().sum(-1) > 0).le(positive).all()
    n = positive.sum()
    want = torch.softmax(conf_pred.detach(), -1)
    want -= torch.nn.functional.one_hot(labels.clamp(min=0), 3).double()
    want = torch.where(used[..., None], want, 0.0) / n
    torch.testing.assert_close(conf_pred.grad, want)


def test_loss_has_no_host_sync():
    # Meta tensors have no values, so this would fail on any host sync.
    loc = torch.empty(2, 100, 4, device="meta", requires_grad=True)
    conf = torch.empty(2, 100, 5, device="meta", requires_grad=True)
    labels = torch.empty(2, 100, dtype=torch.long, device="meta")
    loc_loss, conf_loss = MultiBoxLoss()(loc, conf, torch.empty(2, 100, 4, device="meta"), labels)
    (loc_loss + conf_loss).backward()
    assert loc_loss.shape == () and conf.grad.shape == conf.shape


def test_bad_input_errors():
    loc, conf, target = torch.zeros(2, 10, 4), torch.zeros(2, 10, 3), torch.zeros(2, 10, 4)
    labels = torch.zeros(2, 10, dtype=torch.long)
    criterion = MultiBoxLoss()
    with pytest.raises(ValueError, match="loc_pred must have shape"):
        criterion(loc[..., :3], conf, target, labels)
    with pytest.raises(ValueError, match="loc_target must have"):
        criterion(loc, conf, target[:1], labels)
    with pytest.raises(ValueError, match="conf_pred must have shape"):
        criterion(loc, conf[:, :9], target, labels)
    with pytest.raises(ValueError, match="C >= 2"):
        criterion(loc, conf[..., :1], target, labels)
    with pytest.raises(TypeError, match="labels must be an int64"):
        criterion(loc, conf, target, labels.float())
    with pytest.raises(ValueError, match="labels must have shape"):
        criterion(loc, conf, target, labels[:, :5])
    with pytest.raises(TypeError, match="conf_pred must be a floating-point"):
        criterion(loc, conf.long(), target, labels)
    with pytest.raises(ValueError, match="neg_pos_ratio must be >= 0"):
        MultiBoxLoss(neg_pos_ratio=-1)
    with pytest.raises(ValueError, match="alpha"):
        MultiBoxLoss(alpha=-0.5)
    with pytest.raises(ValueError, match="conf_loss must be"):
        hard_negative_mask(torch.zeros(10), labels[0])
    with pytest.raises(TypeError, match="conf_loss must be floating"):
        hard_negative_mask(labels, labels)


# ---- CUDA ------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loss_on_cuda_equals_cpu():
    g = torch.Generator().manual_seed(6)
    inputs = random_inputs(4, 8732, 21, g, torch.float32)
    want = MultiBoxLoss()(*inputs)
    want_mask = hard_negative_mask(inputs[1][..., 0], inputs[3])
    cuda = [t.cuda() for t in inputs]
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = MultiBoxLoss()(*cuda)
        mask = hard_negative_mask(cuda[1][..., 0], cuda[3])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got[0].cpu(), want[0])
    torch.testing.assert_close(got[1].cpu(), want[1])
    assert torch.equal(mask.cpu(), want_mask)
