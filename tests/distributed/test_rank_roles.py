"""Who does what in a distributed run, checked without MPI: the order of the data's fetch, the
statuses, the run's description."""

from __future__ import annotations

from stablecnn.errors import ConfigError, Interrupted
from stablecnn.training import distributed as dist
from stablecnn.training.comm import LocalComm
from stablecnn.training.config import TrainConfig


class _Rank(LocalComm):
    def __init__(self, rank: int, size: int, events: list):
        super().__init__()
        self.rank, self.size, self.events = rank, size, events

    def barrier(self, what: str = "", watch: bool = True) -> None:
        self.events.append(("barrier", watch))


def test_rank_0_fetches_the_data_before_the_others_read_it():
    for rank, expected in ((0, ["load", ("barrier", False)]), (1, [("barrier", False), "load"])):
        events: list = []
        load = lambda events=events: events.append("load") or 7  # noqa: E731
        got = dist.load_data_in_turn(_Rank(rank, 2, events), load)
        assert got == 7 and events == expected  # (the wait for a download is not watched)


def test_statuses_are_the_command_lines():
    assert dist.exit_status(Interrupted("x")) == 130
    assert dist.exit_status(ConfigError("x")) == 2
    assert dist.exit_status(OSError("x")) == 2
    assert dist.exit_status(RuntimeError("x")) == 1


def test_the_run_is_described_and_an_uneven_share_is_named():
    config = TrainConfig(batch_size=100, micro_batches=6)
    line = dist.describe_run(_Rank(0, 4, []), config)
    assert line.startswith("distributed: 4 ranks, 6 micro-batches of each batch of 100")
    assert "do not share evenly over 4 ranks (1 or 2 each)" in line
    assert "evenly" not in dist.describe_run(_Rank(0, 3, []), config)
    assert dist.default_micro_batches(2) == 6 and dist.default_micro_batches(8) == 8
