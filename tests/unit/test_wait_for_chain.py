"""--wait (chain.wait_for_chain) on a fake clock: it returns soon after the finalize ends, even when the finalize is
too short to be seen RUNNING, without asking Slurm more often the rest of the time. No real time passes."""

from __future__ import annotations

from mlps_slurm.chain import submit_chain, wait_for_chain
from mlps_slurm.rundir import atomic_write_json
from mlps_slurm.slurm import JobState
from tests.unit.fake_slurm import FakeSlurmBackend
from tests.unit.test_chain_fake_slurm import make_run


class Timeline:
    """A fake clock; `at(t, action)` runs action once the clock passes t (as the chain's jobs would meanwhile)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[tuple[float, object]] = []

    def at(self, t: float, action) -> None:
        self.events.append((t, action))
        self.events.sort(key=lambda e: e[0])

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.events and self.events[0][0] <= self.now:
            self.events.pop(0)[1]()


def chain(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    backend.state_calls = 0
    return run, backend, ids


def set_state(backend: FakeSlurmBackend, job_id: str, state: str) -> None:
    backend.given[job_id] = [JobState(job_id, "fake", state, "None")]


def test_returns_within_a_second_of_a_short_finalize_never_seen_running(tmp_path):
    run, backend, ids = chain(tmp_path)
    t = Timeline()
    t.at(2.0, lambda: set_state(backend, ids["preflight"], "COMPLETED"))
    t.at(2.0, lambda: set_state(backend, ids["checkpointing"], "RUNNING"))
    t.at(14.0, lambda: set_state(backend, ids["checkpointing"], "COMPLETED"))
    # The finalize runs from 14.0 to 14.6 s (shorter than any poll), writing results.json at 14.4 s.
    t.at(14.4, lambda: atomic_write_json(run.results_json, {"status": "success"}))
    t.at(14.6, lambda: set_state(backend, ids["finalize"], "COMPLETED"))
    status = wait_for_chain(run, backend, timeout=900, clock=t.clock, sleep=t.sleep)
    assert status.finished and status.state == "SUCCESS"
    assert 14.6 <= t.now <= 14.6 + 0.5  # before: 15.0 at best, 23.0 with this timeline (the 8 s backoff)
    assert backend.state_calls <= 10


def test_a_long_chain_is_asked_with_backoff_not_at_the_fast_rate(tmp_path):
    run, backend, ids = chain(tmp_path)
    t = Timeline()
    t.at(1.0, lambda: set_state(backend, ids["preflight"], "COMPLETED"))
    t.at(1.0, lambda: set_state(backend, ids["checkpointing"], "RUNNING"))
    t.at(600.0, lambda: set_state(backend, ids["checkpointing"], "COMPLETED"))
    t.at(600.0, lambda: set_state(backend, ids["finalize"], "RUNNING"))
    t.at(605.0, lambda: atomic_write_json(run.results_json, {"status": "success"}))
    t.at(605.2, lambda: set_state(backend, ids["finalize"], "COMPLETED"))
    status = wait_for_chain(run, backend, timeout=900, clock=t.clock, sleep=t.sleep)
    assert status.finished and 605.2 <= t.now <= 605.7
    # 10 minutes at 8 s between asks is ~75; the finalize's 5 s at 1 s and the results' fast polls add a few.
    assert backend.state_calls <= 90


def test_results_written_long_before_the_finalize_ends_do_not_keep_it_polling_fast(tmp_path):
    run, backend, ids = chain(tmp_path)
    t = Timeline()
    t.at(1.0, lambda: set_state(backend, ids["preflight"], "COMPLETED"))
    t.at(1.0, lambda: set_state(backend, ids["checkpointing"], "COMPLETED"))
    t.at(1.0, lambda: set_state(backend, ids["finalize"], "RUNNING"))
    t.at(2.0, lambda: atomic_write_json(run.results_json, {"status": "success"}))
    t.at(62.0, lambda: set_state(backend, ids["finalize"], "COMPLETED"))  # e.g. a slow official checker
    wait_for_chain(run, backend, timeout=900, clock=t.clock, sleep=t.sleep)
    assert 62.0 <= t.now <= 63.1
    assert backend.state_calls <= 8 + 62 + 2  # the fast round once, then every second while the finalize runs


def test_a_results_file_already_there_is_not_taken_for_the_finalize_writing(tmp_path):
    run, backend, ids = chain(tmp_path)
    atomic_write_json(run.results_json, {"status": "failed"})  # e.g. left by an earlier attempt
    t = Timeline()
    t.at(30.0, lambda: [set_state(backend, j, "COMPLETED") for j in ids.values()])
    wait_for_chain(run, backend, timeout=900, clock=t.clock, sleep=t.sleep)
    assert backend.state_calls <= 7  # 0, 1, 3, 7, 15, 23, 31 s: the backoff, no fast polls


def test_timeout_still_raises(tmp_path):
    run, backend, _ = chain(tmp_path)
    t = Timeline()
    try:
        wait_for_chain(run, backend, timeout=20, clock=t.clock, sleep=t.sleep)
    except TimeoutError as exc:
        assert "did not finish within 20 s" in str(exc)
    else:
        raise AssertionError("no TimeoutError")
    assert 20.0 <= t.now <= 21.0
