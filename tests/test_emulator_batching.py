"""Continuous batching of one replica: step times, FIFO admission, batch limit, prefill."""

from __future__ import annotations

import pytest

from adapter.emulator.batching import (
    DEFAULT_NUM_GPU_BLOCKS,
    ReplicaEngine,
    Request,
    ServingProfile,
    StepOutcome,
)


def run_until_idle(engine: ReplicaEngine, now: float = 0.0) -> tuple[float, list[StepOutcome]]:
    """Drive the engine in virtual time, steps back to back, as the emulator's driver does."""
    outcomes = []
    while (duration := engine.start_step(now)) is not None:
        now += duration
        outcomes.append(engine.finish_step())
    return now, outcomes


def test_itl_is_alpha_plus_beta_times_batch() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=2.0, beta_ms=0.5, max_batch_size=16))
    requests = [Request(arrival=0.0, prompt_tokens=10, output_tokens=50) for _ in range(8)]
    for request in requests:
        engine.submit(request)

    end, outcomes = run_until_idle(engine)

    step = (2.0 + 0.5 * 8) / 1000
    assert [o.batch for o in outcomes] == [8] * 50
    assert end == pytest.approx(50 * step)
    for request in requests:
        assert request.tokens_out == 50
        assert request.queue_time == 0.0
        assert request.ttft == pytest.approx(step)
        assert request.itl_mean == pytest.approx(step)
        assert request.e2e == pytest.approx(50 * step)
        assert request.finished == request.last_token == end
    assert engine.idle


def test_step_duration_follows_the_batch_as_it_changes() -> None:
    profile = ServingProfile(alpha_ms=1.0, beta_ms=1.0, max_batch_size=8)
    engine = ReplicaEngine(profile)
    engine.submit(Request(arrival=0.0, prompt_tokens=1, output_tokens=1))
    engine.submit(Request(arrival=0.0, prompt_tokens=1, output_tokens=3))

    durations = []
    now = 0.0
    while (duration := engine.start_step(now)) is not None:
        durations.append(duration)
        now += duration
        engine.finish_step()

    assert durations == pytest.approx([profile.itl_ms(2) / 1000] + [profile.itl_ms(1) / 1000] * 2)


def test_admission_is_fifo_and_the_batch_limit_holds() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=2))
    requests = [Request(arrival=0.0, prompt_tokens=1, output_tokens=2) for _ in range(5)]
    for request in requests:
        engine.submit(request)

    assert engine.start_step(0.0) == pytest.approx(0.001)
    assert (engine.running, engine.waiting) == (2, 3)
    # one block each (1 prompt token, none generated yet) of the default cache
    assert engine.kv_cache_usage() == 2 / DEFAULT_NUM_GPU_BLOCKS
    first = engine.finish_step()
    assert first.started == tuple(requests[:2]) and first.finished == ()

    _, outcomes = run_until_idle(engine, first.end)

    assert max(o.batch for o in outcomes) == 2
    admitted = [r.admitted for r in requests]
    assert admitted == sorted(admitted)  # type: ignore[type-var]
    # Two at a time, two tokens each: pairs start every 2 ms, the fifth alone.
    assert admitted == pytest.approx([0.0, 0.0, 0.002, 0.002, 0.004])
    assert [r.finished for r in requests] == pytest.approx([0.002, 0.002, 0.004, 0.004, 0.006])
    assert requests[4].queue_time == pytest.approx(0.004)
    assert engine.kv_cache_usage() == 0.0


def test_a_request_joins_a_running_batch_at_the_next_step() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=1.0, max_batch_size=4))
    old = Request(arrival=0.0, prompt_tokens=1, output_tokens=3)
    engine.submit(old)
    engine.start_step(0.0)
    late = Request(arrival=0.0005, prompt_tokens=1, output_tokens=1)
    engine.submit(late)  # during the step: waits for the next one
    assert engine.running == 1 and engine.waiting == 1
    engine.finish_step()

    assert engine.start_step(0.002) == pytest.approx(0.003)  # batch of two now
    outcome = engine.finish_step()

    assert outcome.started == (late,) and outcome.finished == (late,)
    assert late.admitted == 0.002 and late.first_token == late.finished == pytest.approx(0.005)
    assert late.itl_mean == 0.0
    assert old.tokens_out == 2 and old.finished is None


def test_prefill_is_added_once_to_the_admitting_step() -> None:
    profile = ServingProfile(alpha_ms=2.0, beta_ms=0.0, max_batch_size=4, prefill_ms_per_token=0.1)
    engine = ReplicaEngine(profile)
    engine.submit(Request(arrival=0.0, prompt_tokens=100, output_tokens=3))
    engine.submit(Request(arrival=0.0, prompt_tokens=50, output_tokens=3))

    durations = []
    now = 0.0
    while (duration := engine.start_step(now)) is not None:
        durations.append(duration)
        now += duration
        engine.finish_step()

    assert durations == pytest.approx([0.002 + 0.015, 0.002, 0.002])


def test_idle_engine_starts_no_step_and_steps_do_not_overlap() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=1))
    assert engine.idle and engine.start_step(0.0) is None
    with pytest.raises(RuntimeError):
        engine.finish_step()
    engine.submit(Request(arrival=0.0, prompt_tokens=0, output_tokens=1))
    assert not engine.idle
    engine.start_step(0.0)
    with pytest.raises(RuntimeError):
        engine.start_step(0.0)


def test_drain_returns_the_waiting_queue_and_running_requests_finish() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=1))
    requests = [Request(arrival=0.0, prompt_tokens=1, output_tokens=2) for _ in range(3)]
    for request in requests:
        engine.submit(request)
    engine.start_step(0.0)
    engine.finish_step()

    drained = engine.drain_waiting()

    assert drained == requests[1:]
    assert engine.waiting == 0 and engine.running == 1
    _, outcomes = run_until_idle(engine, 0.001)
    assert outcomes[-1].finished == (requests[0],)
    assert all(r.admitted is None for r in drained)


def test_unfinished_request_properties_refuse_to_guess() -> None:
    request = Request(arrival=1.0, prompt_tokens=1, output_tokens=1)
    for name in ("queue_time", "ttft", "itl_mean", "e2e"):
        with pytest.raises(ValueError):
            getattr(request, name)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha_ms": 0.0, "beta_ms": 0.0, "max_batch_size": 1},
        {"alpha_ms": 1.0, "beta_ms": -1.0, "max_batch_size": 1},
        {"alpha_ms": 1.0, "beta_ms": 0.0, "max_batch_size": 0},
        {"alpha_ms": 1.0, "beta_ms": 0.0, "max_batch_size": 1, "prefill_ms_per_token": -1.0},
        {"alpha_ms": float("nan"), "beta_ms": 0.0, "max_batch_size": 1},
    ],
)
def test_profile_rejects_invalid_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServingProfile(**kwargs)  # type: ignore[arg-type]


def test_request_needs_at_least_one_output_token() -> None:
    with pytest.raises(ValueError):
        Request(arrival=0.0, prompt_tokens=1, output_tokens=0)


def test_cancel_removes_a_waiting_or_running_request() -> None:
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=2))
    a, b, c = (Request(arrival=0.0, prompt_tokens=1, output_tokens=3) for _ in range(3))
    for request in (a, b, c):
        engine.submit(request)
    assert engine.cancel(c)  # waiting
    engine.start_step(0.0)
    assert engine.cancel(a)  # running, during a step: it gets no token from it
    outcome = engine.finish_step()

    assert outcome.batch == 1 and outcome.started == (b,)
    assert a.tokens_out == 0 and c.admitted is None
    assert not engine.cancel(a)
    _, outcomes = run_until_idle(engine, outcome.end)
    assert outcomes[-1].finished == (b,)


def test_a_request_arriving_after_the_step_start_waits_for_the_next_step() -> None:
    """A driver running behind its timeline starts steps in the past; a request that
    arrived later must not join them."""
    engine = ReplicaEngine(ServingProfile(alpha_ms=10.0, beta_ms=0.0, max_batch_size=4))
    early = Request(arrival=0.0, prompt_tokens=1, output_tokens=3)
    late = Request(arrival=0.015, prompt_tokens=1, output_tokens=1)
    engine.submit(early)
    engine.submit(late)
    engine.start_step(0.0)
    assert (engine.running, engine.waiting) == (1, 1)
    engine.finish_step()
    engine.start_step(0.010)  # the timeline is at 10 ms, the late request came at 15 ms
    assert late.admitted is None
    engine.finish_step()
    engine.start_step(0.020)
    assert late.admitted == 0.020


def test_each_step_reports_the_later_tokens_and_their_gap() -> None:
    """What the emulator observes as inter-token latency at every step: the requests that
    got a token that is not their first, each since its previous token (the previous
    step's end, also across a pause in the driver)."""
    engine = ReplicaEngine(ServingProfile(alpha_ms=1.0, beta_ms=1.0, max_batch_size=4))
    a = Request(arrival=0.0, prompt_tokens=1, output_tokens=3)
    engine.submit(a)
    engine.start_step(0.0)
    first = engine.finish_step()  # a's first token at 2 ms
    assert (first.started, first.decoded, first.token_gap) == ((a,), 0, 0.0)

    b = Request(arrival=0.001, prompt_tokens=1, output_tokens=2)
    engine.submit(b)
    engine.start_step(0.010)  # the driver ran 8 ms late: a's gap includes it
    second = engine.finish_step()  # batch of two: 3 ms, ends at 13 ms
    assert second.started == (b,) and second.decoded == 1
    assert second.token_gap == pytest.approx(0.013 - 0.002)
    assert a.last_token == pytest.approx(0.013)

    engine.start_step(0.013)
    third = engine.finish_step()  # a's last, b's second token
    assert (third.decoded, third.started) == (2, ())
    assert third.token_gap == pytest.approx(0.003)
    assert {r.tokens_out for r in (a, b)} == {3, 2} and engine.idle


# --- the KV cache (blocks of `block_size` tokens, as vLLM pages it) ---------------------


def test_kv_usage_counts_prompt_and_generated_tokens_in_whole_blocks() -> None:
    profile = ServingProfile(
        alpha_ms=1.0, beta_ms=0.0, max_batch_size=4, num_gpu_blocks=100, block_size=16
    )
    assert (profile.gpu_blocks, profile.kv_cache_tokens) == (100, 1600)
    engine = ReplicaEngine(profile)
    a = Request(arrival=0.0, prompt_tokens=16, output_tokens=10)
    b = Request(arrival=0.0, prompt_tokens=20, output_tokens=10)
    engine.submit(a)
    engine.submit(b)
    engine.start_step(0.0)
    assert engine.kv_cache_usage() == 3 / 100  # the prompts: 1 + 2 blocks
    engine.finish_step()
    assert engine.kv_cache_usage() == 3 / 100  # between steps: what the last one held
    engine.start_step(0.001)  # their first tokens join: 17 tokens (2 blocks), 21 (2)
    assert engine.kv_cache_usage() == 4 / 100
    run_until_idle(engine, 0.001 + (engine.finish_step().end - 0.001))
    assert engine.idle and engine.kv_cache_usage() == 0.0


def test_admission_needs_room_for_the_prompt_and_a_spare_block() -> None:
    # 10 blocks of 4 tokens. A holds 5 blocks (20 prompt tokens) once admitted; B's prompt
    # needs 4, plus the spare: 5 + 4 + 1 = 10 fits; C's 1 block + 1 no longer does, and
    # D behind it (FIFO) waits too though it would fit
    profile = ServingProfile(
        alpha_ms=1.0, beta_ms=0.0, max_batch_size=8, num_gpu_blocks=10, block_size=4
    )
    engine = ReplicaEngine(profile)
    a = Request(arrival=0.0, prompt_tokens=20, output_tokens=1)
    b = Request(arrival=0.0, prompt_tokens=16, output_tokens=1)
    c = Request(arrival=0.0, prompt_tokens=4, output_tokens=1)
    d = Request(arrival=0.0, prompt_tokens=0, output_tokens=1)
    for request in (a, b, c, d):
        engine.submit(request)
    engine.start_step(0.0)
    assert (engine.running, engine.waiting) == (2, 2)
    outcome = engine.finish_step()
    assert outcome.finished == (a, b)  # one token each: done, their blocks free
    engine.start_step(outcome.end)
    assert (engine.running, engine.waiting) == (2, 0)


def test_a_request_the_cache_can_never_hold_is_refused() -> None:
    profile = ServingProfile(
        alpha_ms=1.0, beta_ms=0.0, max_batch_size=8, num_gpu_blocks=10, block_size=4
    )
    engine = ReplicaEngine(profile)
    engine.submit(Request(arrival=0.0, prompt_tokens=30, output_tokens=6))  # 9 blocks + 1
    with pytest.raises(ValueError, match="does not fit a KV cache of 40 tokens"):
        engine.submit(Request(arrival=0.0, prompt_tokens=30, output_tokens=7))
    assert engine.waiting == 1


def test_growth_past_the_cache_preempts_the_newest_request_which_recomputes_later() -> None:
    # 8 blocks of 2 tokens, no prompts: A and B (12 tokens each) hold a block more every
    # second step. Steps of 1 ms, plus 0.1 ms per token prefilled.
    profile = ServingProfile(
        alpha_ms=1.0,
        beta_ms=0.0,
        max_batch_size=4,
        prefill_ms_per_token=0.1,
        num_gpu_blocks=8,
        block_size=2,
    )
    engine = ReplicaEngine(profile)
    a = Request(arrival=0.0, prompt_tokens=0, output_tokens=12)
    b = Request(arrival=0.0, prompt_tokens=0, output_tokens=12)
    late = Request(arrival=0.0, prompt_tokens=0, output_tokens=1)
    engine.submit(a)
    engine.submit(b)
    now = 0.0
    for _ in range(9):
        now += engine.start_step(now) or 0.0
        engine.finish_step()
    assert (a.tokens_out, b.tokens_out, engine.preemptions) == (9, 9, 0)
    engine.submit(late)

    # 9 tokens each need 5 blocks: 10 > 8. B, the newest, goes back to the queue's
    # front with its KV lost; nobody is admitted in a step that preempted
    preempted_at = now
    duration = engine.start_step(now)
    assert duration is not None and duration == pytest.approx(0.001)
    assert (engine.running, engine.waiting, engine.preemptions) == (1, 2, 1)
    assert engine.kv_cache_usage() == 5 / 8
    now += duration
    outcomes = [engine.finish_step()]
    while b.finished is None:
        duration = engine.start_step(now)
        assert duration is not None
        now += duration
        outcomes.append(engine.finish_step())
    assert engine.preemptions == 1
    # A's last three tokens, then B readmitted with `late` behind it: B's prefill
    # recomputes its 9 tokens (0.9 ms), its first token after that keeps its old TTFT
    assert a.finished is not None and a.finished == pytest.approx(preempted_at + 0.003)
    resumed = next(o for o in outcomes if o.resumed)
    assert (resumed.resumed, resumed.started, resumed.decoded) == ((b,), (late,), 0)
    assert resumed.end == pytest.approx(a.finished + 0.001 + 0.0009)
    (gap,) = resumed.resumed_gaps
    assert gap == pytest.approx(resumed.end - preempted_at)
    assert b.admitted == 0.0 and b.first_token == pytest.approx(0.0010)
    assert b.tokens_out == 12


def test_profile_rejects_a_cache_of_fewer_than_two_blocks_or_an_empty_block() -> None:
    with pytest.raises(ValueError, match="num_gpu_blocks"):
        ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=1, num_gpu_blocks=1)
    with pytest.raises(ValueError, match="block_size"):
        ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=1, block_size=0)
