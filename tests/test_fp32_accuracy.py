"""Float32 accuracy of our second-order MAML meta-gradient against the plain path (issue 12).

Our fast paths (channels-last layout, closed-form double backwards, batched groups) must not
round worse than a plain `functional_call` MAML on the stock NCHW Conv-4: both are compared
with the same float64 reference (`bench/fp32_error.py`). Second-order MAML amplifies rounding
by a factor that varies by orders of magnitude between batches, so one batch decides nothing:
the test compares the median and the worst over several seeded meta-batches.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from bench import fp32_error, speed

SEEDS = range(5)
CASE = next(c for c in speed.CASES if c.key == "maml-5w1s-q15-so")


@pytest.mark.skipif(
    not speed.DATA.is_dir(),
    reason=f"needs Omniglot episodes at {speed.DATA} (speed.py falls back to generated glyphs, "
    "other batches than the ones this bound was set on)",
)
@pytest.mark.xfail(
    strict=True,
    reason="issue 12 still open: oneDNN's channels-last convolutions (and the query pass's "
    "channels-last batch norm) round more than the NCHW path; 15-query SO median 2.5x plain "
    "over 20 seeds at one thread (bench/RESULTS.md fp32-error). Strict: passes -> fails, "
    "so a fix is noticed",
)
def test_second_order_fp32_error_within_2x_of_plain() -> None:
    """5-way 1-shot, 15 queries, Conv-4 64, meta-batch 8: ours <= 2x plain at median and worst."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        case = speed.Case(
            CASE.key, CASE.title, CASE.preset, (*CASE.overrides, "train.meta_batch=8"), ()
        )
        errs = fp32_error.measure(case, list(SEEDS), [1], ["ours", "plain"], False, lambda s: None)
    finally:
        torch.set_num_threads(threads)
    ours = [e[0] for e in errs["1"]["ours"]]
    plain = [e[0] for e in errs["1"]["plain"]]
    assert statistics.median(ours) <= 2 * statistics.median(plain), (ours, plain)
    assert max(ours) <= 2 * max(plain), (ours, plain)
