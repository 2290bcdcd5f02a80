"""Negative sampling: uniform, popular and side-information negatives and stage 1 of the 2-stage sampler
(``negatives``), stage 2 (``two_stage``), and the tf.data stream of training batches (``pipeline``)."""
