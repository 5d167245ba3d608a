"""Lesson 03's new exercise: the bipartite step of the original Caffe matching."""

import pytest
import torch

from ssdlearn import checks
from ssdlearn.checks.lesson03 import _BIPARTITE_MISTAKES, _greedy


def caffe_match_bbox(iou):
    """MatchBBox's bipartite loop of weiliu89/caffe (bbox_util.cpp), line for line: over the
    predictions, then the objects left, a strictly larger overlap wins; only overlaps
    above 1e-6 are candidates."""
    num_gt, num_pred = iou.shape
    match = [-1] * num_pred
    result = [-1] * num_gt
    pool = list(range(num_gt))
    while pool:
        best, best_i, best_j = -1.0, -1, -1
        for i in range(num_pred):
            if match[i] != -1:
                continue
            for j in pool:
                if iou[j, i] > 1e-6 and iou[j, i] > best:
                    best, best_i, best_j = float(iou[j, i]), i, j
        if best_j == -1:
            break
        match[best_i], result[best_j] = best_j, best_i
        pool.remove(best_j)
    return torch.tensor(result, dtype=torch.long)


@pytest.mark.parametrize("seed", range(40))
def test_reference_is_caffes_loop(seed):
    g = torch.Generator().manual_seed(seed)
    num_gt, num_pred = torch.randint(0, 5, (2,), generator=g).tolist()
    # Few distinct values: many ties and zeros, where the tie rule would show.
    iou = torch.randint(0, 4, (num_gt, num_pred), generator=g).double() / 4
    assert torch.equal(_greedy(iou), caffe_match_bbox(iou))


def test_reference_solution_passes():
    result = checks.bipartite_check(_greedy)
    assert result and "✓" in result.message


@pytest.mark.parametrize("mistake", _BIPARTITE_MISTAKES, ids=lambda m: m.hint[:40])
def test_each_mistake_fails_with_its_hint(mistake):
    result = checks.bipartite_check(mistake.wrong)
    assert not result and result.done
    assert mistake.hint in result.message


def test_a_loop_over_default_boxes_is_caught():
    def best_by_scanning(iou):
        chosen = torch.full((iou.shape[0],), -1, dtype=torch.long)
        work = iou.clone()
        for _ in range(iou.shape[0]):
            best, where = 0.0, None
            for p in range(work.shape[1]):          # the loop the exercise forbids
                g = int(work[:, p].argmax())
                if work[g, p] > best:
                    best, where = float(work[g, p]), (g, p)
            if where is None:
                break
            chosen[where[0]] = where[1]
            work[:, where[1]] = -1
            work[where[0]] = -1
        return chosen

    result = checks.bipartite_check(best_by_scanning)
    assert not result and result.done and "default boxes" in result.message


def test_stub_is_not_done():
    def stub(iou):
        raise NotImplementedError("your code here")

    result = checks.bipartite_check(stub)
    assert not result and not result.done and "not done" in result.message
