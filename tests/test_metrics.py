"""The loop's bookkeeping, apart from the loop: metrics records, the collapse warning, metrics.jsonl,
and a time budget's length in steps."""
import json
import math

import pytest
import torch

from jepa_lite.engine.metrics import IntervalMeter, LiveMetrics, collapse_warning
from jepa_lite.engine.schedules import BudgetLength


def step_result(loss, batch=4, tokens=None, **parts):
    tokens = torch.randn(batch, 6, 8, generator=torch.Generator().manual_seed(0)) if tokens is None else tokens
    return {"loss": torch.tensor(loss), "lr": 1e-3, "wd": 0.1, "momentum": 0.99, "target_tokens": tokens,
            "batch": batch, **{k: torch.tensor(v) for k, v in parts.items()}}


def log_step(meter, step, result, now, run_start):
    """What the trainer does at a log step (one process: no all-reduce of the sums)."""
    names, sums = meter.sums()
    return meter.record(step, dict(zip(names, (sums / meter.steps).tolist())), result, now, run_start)


def test_a_record_averages_its_interval_and_starts_a_new_one():
    meter = IntervalMeter(start=10.0)
    meter.add(step_result(1.0, pixel_loss=0.5))
    meter.add(step_result(3.0, pixel_loss=1.5))
    record = log_step(meter, 2, step_result(3.0), now=12.0, run_start=0.0)
    assert record["loss"] == pytest.approx(2.0) and record["pixel_loss"] == pytest.approx(1.0)
    assert record["images_per_second"] == pytest.approx(8 / 2.0)          # 2 steps x 4 images in 2 s
    assert record["elapsed_seconds"] == 12.0 and record["step"] == 2
    assert 0 < record["target_image_share"] <= 1 and record["target_rankme"] > 1
    meter.add(step_result(5.0))
    after = log_step(meter, 3, step_result(5.0), now=13.0, run_start=0.0)
    assert after["loss"] == pytest.approx(5.0) and "pixel_loss" not in after
    meter.add(step_result(1.0, batch=1))
    one_image = log_step(meter, 4, step_result(1.0, batch=1), now=14.0, run_start=0.0)
    assert math.isnan(one_image["target_image_share"])                 # undefined for one image


def test_the_collapse_warning_names_each_kind():
    healthy = {"step": 7, "target_std": 0.15, "target_image_share": 0.9}
    assert collapse_warning(healthy, embed_dim=64) is None
    flat = collapse_warning({**healthy, "target_std": 0.001}, embed_dim=64)
    assert "step 7" in flat and "target std 0.0010 < 0.0125" in flat
    positional = collapse_warning({**healthy, "target_image_share": 0.01}, embed_dim=64)
    assert "1.0% of the target variance is across images" in positional and "target std" not in positional


def test_live_metrics_starts_from_the_history_and_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    live = LiveMetrics(path, [{"step": 1}])
    live.write({"step": 2})
    live.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    silent = LiveMetrics(None, [{"step": 1}])          # ranks other than 0 write nothing
    silent.write({"step": 2})
    silent.close()


def test_a_budget_sets_the_length_from_the_measured_speed():
    length, total = BudgetLength(budget_seconds=60.0), None
    for step in range(1, 400):
        now = 2.0 + 0.5 * step                 # 0.5 s a step after a slow first step
        total = length.update(step, now, run_start=0.0, total_steps=total)
        if step < 13:
            assert total is None               # 3 steps to warm up, then 10 to measure
        if now > 0.8 * 60:
            break
    assert total == pytest.approx((60 - 2.0) / 0.5, abs=2)      # the steps that fit in the budget
    assert length.update(step + 10, 2.0 + 0.5 * (step + 10) + 30, 0.0, total) == total   # kept after 80%
