"""CPU lists for --cpus / --worker-cpus, and pinning this process."""

from __future__ import annotations

import os

import pytest

from worker.affinity import parse_cpus, pin_to


def test_lists_and_ranges_parse() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-3") == {0, 2, 3}
    assert parse_cpus(" 1 , 1 ") == {1}


@pytest.mark.parametrize("bad", ["", "a", "3-1", "-1", "1,,2"])
def test_bad_lists_say_what_to_write(bad: str) -> None:
    with pytest.raises(ValueError, match="use numbers and ranges"):
        parse_cpus(bad)


def test_pinning_changes_this_process_affinity_and_refuses_missing_cpus() -> None:
    before = os.sched_getaffinity(0)
    try:
        one = min(before)
        pin_to({one})
        assert os.sched_getaffinity(0) == {one}
        with pytest.raises(ValueError, match="cannot pin"):
            pin_to({10_000})
    finally:
        os.sched_setaffinity(0, before)
