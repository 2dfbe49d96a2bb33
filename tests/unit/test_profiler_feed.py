"""ExecutionFeed: statistics deltas -> predictor observations and the accuracy log
(a fake statistics source: the feed's arithmetic, not transport, is under test)."""

from __future__ import annotations

from typing import Any

from kserve.errors import Unavailable
from profiler.feed import ExecutionFeed, Prediction, batch_compute_ns
from profiler.predictor import LatencyPredictor


class Stats:
    """Cumulative batch_stats the way Triton and the worker report them."""

    def __init__(self, name: str = "m") -> None:
        self.name = name
        self.rows: dict[int, list[int]] = {}
        self.fail = False

    def run(self, batch: int, seconds: float) -> None:
        row = self.rows.setdefault(batch, [0, 0])
        row[0] += 1
        row[1] += round(seconds * 1e9)

    async def statistics(self, name: str | None = None) -> dict[str, Any]:
        if self.fail:
            raise Unavailable("instance gone")
        # split over the three phases, as instances do: the feed must add them up
        return {"model_stats": [{"name": self.name, "batch_stats": [
            {"batch_size": b, "compute_input": {"count": c, "ns": ns // 4},
             "compute_infer": {"count": c, "ns": ns - 2 * (ns // 4)},
             "compute_output": {"count": c, "ns": ns // 4}}
            for b, (c, ns) in self.rows.items()]}]}


def feed_with() -> tuple[ExecutionFeed, LatencyPredictor]:
    predictor = LatencyPredictor()
    return ExecutionFeed(predictor, wall_clock=lambda: 1234.0), predictor


async def test_one_execution_between_reads_is_observed_exactly_and_paired() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", 4, 0.5, None)
    stats.run(4, 0.010)
    await feed.drain()  # first read: a baseline only
    assert predictor.exec_time("m", "cpu", 4) is None
    stats.run(4, 0.020)
    feed.executed("i1", stats, "m", "cpu", 4, 0.5, Prediction(4, 0.019, 0.025))
    await feed.drain()
    assert predictor.exec_time("m", "cpu", 4, percentile=50) == 0.020  # compute, not the 0.5 s round trip
    assert feed.exact == 1 and feed.merged == 0
    [sample] = feed.samples
    assert (sample.batch, sample.observed_s, sample.predicted_p50_s, sample.basis) == (4, 0.020, 0.019, "compute")


async def test_several_executions_between_reads_feed_their_mean_once_and_are_not_paired() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", 2, 0.1, None)
    await feed.drain()
    for s in (0.010, 0.030):
        stats.run(2, s)
        feed.executed("i1", stats, "m", "cpu", 2, 0.1, Prediction(2, 0.02, 0.03))
    await feed.drain()
    assert predictor.exec_time("m", "cpu", 2, percentile=50) == 0.020
    assert predictor.snapshot("m").classes["cpu"].exec[2].n == 1
    assert feed.merged == 2 and feed.exact == 0 and not feed.samples


async def test_batch_sizes_come_from_the_statistics_when_the_gateway_could_not_read_them() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", None, 0.1, None)
    await feed.drain()
    stats.run(8, 0.04)
    feed.executed("i1", stats, "m", "cpu", None, 0.1, None)
    await feed.drain()
    assert predictor.exec_time("m", "cpu", 8) == 0.04


async def test_an_instance_without_statistics_is_fed_round_trips() -> None:
    stats = Stats()
    stats.fail = True
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", 1, 0.007, Prediction(1, 0.006, 0.008))
    await feed.drain()
    assert predictor.exec_time("m", "cpu", 1) == 0.007
    assert [s.basis for s in feed.samples] == ["round_trip"]


async def test_counters_going_back_after_an_instance_restart_are_not_negative_times() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    stats.run(1, 0.05)
    feed.executed("i1", stats, "m", "cpu", 1, 0.1, None)
    await feed.drain()
    stats.rows.clear()  # restarted
    feed.executed("i1", stats, "m", "cpu", 1, 0.1, None)
    await feed.drain()
    assert predictor.exec_time("m", "cpu", 1) is None


def test_batch_compute_ns_sums_phases_and_versions_and_says_none_without_batch_stats() -> None:
    answer = {"model_stats": [
        {"name": "m", "version": "1", "batch_stats": [
            {"batch_size": 1, "compute_input": {"count": 1, "ns": 1}, "compute_infer": {"count": 1, "ns": 10},
             "compute_output": {"count": 1, "ns": 100}}]},
        {"name": "m", "version": "2", "batch_stats": [
            {"batch_size": 1, "compute_input": {"count": 2, "ns": 0}, "compute_infer": {"count": 2, "ns": 5},
             "compute_output": {"count": 2, "ns": 0}}]},
        {"name": "other", "batch_stats": []}]}
    assert batch_compute_ns(answer, "m") == {1: (3, 116)}
    assert batch_compute_ns(answer, "other") == {}
    assert batch_compute_ns({"model_stats": [{"name": "m", "inference_stats": {}}]}, "m") == {}
    assert batch_compute_ns(answer, "absent") is None


async def test_in_band_compute_times_are_observed_exactly_and_paired_without_a_statistics_read() -> None:
    stats = Stats()
    stats.fail = True  # any statistics read would show up as round-trip samples
    feed, predictor = feed_with()
    feed.observed_exact("m", "cpu", 4, 0.012, Prediction(4, 0.011, 0.013), instance_id="i1")
    feed.observed_exact("m", "cpu", 4, 0.014, None, instance_id="i1")
    await feed.drain()
    snap = predictor.snapshot("m").classes["cpu"].exec[4]
    assert snap.n == 2 and predictor.exec_time("m", "cpu", 4) == 0.014
    assert feed.exact == 2 and feed.merged == 0
    [sample] = feed.samples
    assert (sample.observed_s, sample.predicted_p99_s, sample.basis) == (0.012, 0.013, "compute")


async def test_a_prediction_for_another_batch_size_is_not_paired_in_band() -> None:
    feed, _ = feed_with()
    feed.observed_exact("m", "cpu", 2, 0.01, Prediction(4, 0.02, 0.03))
    assert not feed.samples and feed.exact == 1


async def test_statistics_deltas_leave_out_executions_already_observed_in_band() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", None, 0.1, None)
    await feed.drain()  # baseline
    stats.run(2, 0.050)  # reported in-band
    feed.observed_exact("m", "cpu", 2, 0.050, None, instance_id="i1")
    stats.run(2, 0.010)  # a JSON request: batch unknown to the gateway
    feed.executed("i1", stats, "m", "cpu", None, 0.1, None)
    await feed.drain()
    # the statistics path saw one new execution (0.010), not a mean of two (0.030)
    assert predictor.snapshot("m").classes["cpu"].exec[2].n == 2
    assert predictor.exec_time("m", "cpu", 2, percentile=0) == 0.010
    assert predictor.exec_time("m", "cpu", 2, percentile=100) == 0.050
    assert feed.exact == 2 and feed.merged == 0


async def test_in_band_elements_move_the_size_curve() -> None:
    feed, predictor = feed_with()
    predictor.observe_exec("m", "cpu", 1, 0.004, elements=3)  # one token seen first
    feed.observed_exact("m", "cpu", 1, 0.023, Prediction(1, 0.004, 0.004, elements=384),
                        instance_id="i1", elements=384)
    assert predictor.exec_time_for("m", "cpu", 1, 384) == 0.023
    assert predictor.exec_time_for("m", "cpu", 1, 3) == 0.004
    [sample] = feed.samples
    assert (sample.elements, sample.observed_s) == (384, 0.023)


async def test_statistics_deltas_carry_elements_only_when_every_execution_had_them() -> None:
    stats = Stats()
    feed, predictor = feed_with()
    feed.executed("i1", stats, "m", "cpu", 1, 0.1, None)
    await feed.drain()  # baseline
    stats.run(1, 0.020)
    feed.executed("i1", stats, "m", "cpu", 1, 0.1, None, elements=300)
    await feed.drain()  # alone between two reads: exact, with its size
    assert predictor.exec_time_for("m", "cpu", 1, 300) == 0.020
    for seconds, e in ((0.010, 30), (0.040, 600)):
        stats.run(1, seconds)
        feed.executed("i1", stats, "m", "cpu", 1, 0.1, None, elements=e)
    await feed.drain()  # a mean over two sizes is no size's time
    assert [p.elements for p in predictor.snapshot("m").classes["cpu"].sizes] == [300]
    for _ in range(2):
        stats.run(1, 0.030)
        feed.executed("i1", stats, "m", "cpu", 1, 0.1, None, elements=600)
    await feed.drain()  # a mean over two executions of one size is that size's
    assert predictor.exec_time_for("m", "cpu", 1, 600) == 0.030
