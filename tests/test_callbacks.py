"""The progress shown while training: the terminal bar's text (the log-file line is checked in test_train)."""

from __future__ import annotations

from cml_tf.training.callbacks import progress_bar


def test_progress_bar_formats_loss_and_throughput():
    # 120 of 1000 steps: int(30 * 0.12) = 3 cells filled, the last one the arrow head
    line = progress_bar(120, 1000, 3.4, 0.412149, 41049.4855)
    assert line == " 120/1000 [==>" + " " * 27 + "] 3s - loss 0.4121 - 41,049 pairs/s"
    assert "41049.4855" not in line and "pairs/s:" not in line


def test_progress_bar_ends_full_and_leaves_out_what_is_not_known():
    assert progress_bar(1000, 1000, 61.0, None, None) == "1000/1000 [" + "=" * 30 + "] 61s"
    assert progress_bar(0, 7, 0.0, 1.5, None) == "0/7 [" + " " * 30 + "] 0s - loss 1.5000"
    assert progress_bar(3, 7, 0.2, None, 999.6).endswith("] 0s - 1,000 pairs/s")
