"""A model host warms its runtime up with a few runs before it reports ready (TorchScript's
profiling executor profiles the first run and optimises the second), and a model that
rejects the warm-up inputs still loads."""

from __future__ import annotations

from modelfiles import config as cfg
from worker.sandbox.host import WARM_UP_RUNS, _warm_up


class Counting:
    def __init__(self, fail: bool = False) -> None:
        self.runs, self.fail = 0, fail

    def run(self, inputs, outputs):
        self.runs += 1
        assert inputs["INPUT0"].shape == (1, 4) and outputs == ["OUTPUT0"]
        if self.fail:
            raise ValueError("size-1 dims rejected")
        return {}


SPEC = cfg.parse_json({"name": "m", "platform": cfg.ONNX, "max_batch_size": 8,
                       "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
                       "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}]}, "m")


def test_warm_up_runs_the_model_several_times_past_its_first_runs() -> None:
    rt = Counting()
    _warm_up(rt, cfg.spec_of(SPEC))
    assert WARM_UP_RUNS >= 3 and rt.runs == WARM_UP_RUNS


def test_a_model_that_rejects_the_warm_up_inputs_stops_warming_and_still_loads(capsys) -> None:
    rt = Counting(fail=True)
    _warm_up(rt, cfg.spec_of(SPEC))
    assert rt.runs == 1 and "warm-up run of 'm' failed" in capsys.readouterr().err
