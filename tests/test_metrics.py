import numpy as np
import pytest

from pointseg.metrics import SegMetrics, confusion_matrix, pool


def test_metrics_against_a_hand_computed_confusion_matrix():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 0])
    cm = confusion_matrix(gt, pred, 4)
    # by hand: class 0: 3 of 4 right, predicted 0 four times (one from class 2)
    assert cm[:3, :3].tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    m = SegMetrics(cm, ("a", "b", "c", "d"))
    assert m.oa == pytest.approx(7 / 10)
    # IoU_0 = 3 / (4 + 4 - 3); IoU_1 = 1 / (2 + 2 - 1); IoU_2 = 3 / (4 + 4 - 3); class d absent -> NaN
    assert m.iou[:3] == pytest.approx([3 / 5, 1 / 3, 3 / 5])
    assert np.isnan(m.iou[3])
    assert m.miou == pytest.approx((3 / 5 + 1 / 3 + 3 / 5) / 3)
    assert m.macc == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    d = m.to_dict()
    assert d["iou"]["d"] is None and d["classes"] == ["a", "b", "c", "d"]


def test_pooling_sums_confusions_not_averages_of_ious():
    a = SegMetrics(np.array([[10, 0], [0, 0]]), ("x", "y"))
    b = SegMetrics(np.array([[0, 0], [5, 5]]), ("x", "y"))
    p = pool([a, b])
    assert p.confusion.tolist() == [[10, 0], [5, 5]]
    assert p.miou == pytest.approx((10 / 15 + 5 / 10) / 2)


def test_labels_outside_table_are_refused():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="3 labels but prediction has 2"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]), 3)
