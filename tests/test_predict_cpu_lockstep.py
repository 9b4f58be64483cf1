"""The CPU system's closed loop with fixed lengths, simulated step by step: values computed by hand."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_predict_loop import SYSTEM as LOOP_SYSTEM
from tritonforge.builder import cpu_system
from tritonforge.builder.predict import Workload

# t_dec(b) = 10 + 2 b ms; t_pf(b) = 5 + b x 100 x 0.1 = 5 + 10 b ms (ISL 100); the stack's o = 4 ms
SYSTEM = dataclasses.replace(LOOP_SYSTEM, request_overhead_s=0.004)
NO_STACK = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "request_overhead_s": 0.0})


def loop(sysm: cpu_system.CpuSystem, users: int, osl: int, max_batch: int = 8, n: int = 1):
    costs = cpu_system._Costs(sysm, None, Workload(100, osl, concurrency=users))
    return costs.closed_loop(users, max_batch, requests_per_user=n)


def test_two_users_handed_over_one_at_a_time() -> None:
    r = loop(SYSTEM, 2, 3)
    # arrivals at 4 and 8 ms. 4: prefill u0 alone (15) -> 19. 19: decode u0 (12) + prefill u1 (15) -> 46.
    # 46: decode both (14) -> 60, u0 done. 60: decode u1 (12) -> 72, u1 done.
    # u0: TTFT 19 - 4 + 4 = 19, latency 60, ITL (60 - 19) / 2; u1 also waited 4 ms behind u0 in the stack:
    # TTFT 46 - 8 + 4 + 4 = 46, latency 72, ITL 13
    assert r.ttft_s == pytest.approx((0.019 + 0.046) / 2)
    assert r.itl_s == pytest.approx((0.0205 + 0.013) / 2)
    assert r.latency_s == pytest.approx((0.060 + 0.072) / 2)
    assert r.output_tokens_per_s == pytest.approx(2 * 3 / 0.072)


def test_first_arrival_alone_the_rest_join_the_next_step() -> None:
    r = loop(SYSTEM, 4, 11)
    # arrivals 4, 8, 12, 16. 4: prefill u0 -> 19. 19: decode u0 + prefill 3 (12 + 35) -> 66. Then 9 steps of
    # 4 (18 ms) -> 228: u0 has 11 tokens; one step of 3 (16) -> 244: u1..u3 done. u1..u3 waited 4, 8, 12 ms
    # in the stack behind the ones before them (on the client's path, as their own 4 ms are)
    ttft = [19, 66 - 8 + 4 + 4, 66 - 12 + 4 + 8, 66 - 16 + 4 + 12]
    latency = [228, 244 - 8 + 4 + 4, 244 - 12 + 4 + 8, 244 - 16 + 4 + 12]
    itl = [(228 - 19) / 10] + 3 * [(244 - 66) / 10]
    assert r.ttft_s * 1e3 == pytest.approx(sum(ttft) / 4)
    assert r.latency_s * 1e3 == pytest.approx(sum(latency) / 4)
    assert r.itl_s * 1e3 == pytest.approx(sum(itl) / 4)
    assert r.output_tokens_per_s == pytest.approx(4 * 11 / 0.244)


def test_without_stack_time_it_is_plain_lockstep() -> None:
    r = loop(NO_STACK, 3, 11, n=3)
    # all arrive together: one prefill of 3 (35 ms), 10 decode steps of 3 (16 ms); the next ones the same
    assert r.ttft_s == pytest.approx(0.035)
    assert r.itl_s == pytest.approx(0.016)
    assert r.latency_s == pytest.approx(0.035 + 10 * 0.016)
    assert r.output_tokens_per_s == pytest.approx(3 * 3 * 11 / (3 * 0.195))


def test_users_beyond_the_batch_wait_for_a_slot() -> None:
    r = loop(NO_STACK, 3, 2, max_batch=2)
    # 0: prefill u0, u1 (25) -> 25; decode 2 (14) -> 39, both done; prefill u2 (15) -> 54; decode 1 (12) -> 66
    assert r.ttft_s * 1e3 == pytest.approx((25 + 25 + 54) / 3)
    assert r.latency_s * 1e3 == pytest.approx((39 + 39 + 66) / 3)
    assert r.itl_s * 1e3 == pytest.approx((14 + 14 + 12) / 3)
    assert r.output_tokens_per_s == pytest.approx(3 * 2 / 0.066)


def test_single_user_matches_the_closed_form() -> None:
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=1), 8)
    s = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=1), 8, lockstep=True)
    # o + t_pf(1) = 19 ms, t_dec(1) = 12 ms, 19 + 10 x 12 ms; one request per 139 ms (the drawn stack
    # times between requests average 4 ms: 256 draws of a 4 ms mean in 139 ms cycles move it < 1 %)
    assert s.ttft_ms == pytest.approx(p.ttft_ms) == pytest.approx(19.0)
    assert s.itl_ms == pytest.approx(p.itl_ms) == pytest.approx(12.0)
    assert s.request_latency_ms == pytest.approx(p.request_latency_ms)
    assert s.output_tokens_per_s == pytest.approx(11 / 0.139, rel=0.01)
    det = cpu_system._Costs(SYSTEM, None, Workload(100, 11, concurrency=1)).closed_loop(1, 8)
    assert det.output_tokens_per_s == pytest.approx(11 / 0.139)


def test_prediction_uses_the_simulation_and_scales_with_the_share() -> None:
    base = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "cpu_share": 0.5})
    p = cpu_system.predict_cpu(base, Workload(100, 11, concurrency=4), 8, lockstep=True)
    slow = cpu_system.predict_cpu(base, Workload(100, 11, concurrency=4), 8, lockstep=True, cpu_share=0.25)
    want = cpu_system._Costs(SYSTEM, None, Workload(100, 11, concurrency=4)).closed_loop_mean(4, 8)
    assert p.ttft_ms == pytest.approx(want.ttft_s * 1e3) and p.itl_ms == pytest.approx(want.itl_s * 1e3)
    assert p.output_tokens_per_s == pytest.approx(want.output_tokens_per_s)
    # every time (engine and stack) twice as long at half the share
    assert slow.ttft_ms == pytest.approx(2 * p.ttft_ms) and slow.itl_ms == pytest.approx(2 * p.itl_ms)
    assert slow.output_tokens_per_s == pytest.approx(p.output_tokens_per_s / 2)
    assert any("one at a time" in n for n in p.notes)


class Draws:
    """The stack's times per request, in order (stands for random.Random in a hand-computed run)."""

    def __init__(self, *seconds: float) -> None:
        self.left, self.rates = list(seconds), list[float]()

    def expovariate(self, lambd: float) -> float:
        self.rates.append(lambd)
        return self.left.pop(0)


def test_stack_time_per_request_is_drawn() -> None:
    draws = Draws(0.002, 0.010)
    r = cpu_system._Costs(SYSTEM, None, Workload(100, 3, concurrency=2)).closed_loop(2, 8, 1, draws)
    assert draws.rates == [250.0, 250.0]  # mean o = 4 ms
    # arrivals at 2 and 12 ms. 2: prefill u0 -> 17. 17: decode u0 + prefill u1 (27) -> 44. 44: decode 2 -> 58,
    # u0 done; 58: decode u1 -> 70. TTFT 17 - 2 + 4 and 44 - 12 + 4 + 2 (the mean o on the client's path;
    # u1 waited 2 ms behind u0)
    assert r.ttft_s * 1e3 == pytest.approx((19 + 38) / 2)
    assert r.latency_s * 1e3 == pytest.approx((60 + 64) / 2)
    assert r.itl_s * 1e3 == pytest.approx((20.5 + 13) / 2)
    assert r.output_tokens_per_s == pytest.approx(6 / 0.070)


def test_seeded_mean_is_reproducible_and_plain_lockstep_without_stack_time() -> None:
    costs = cpu_system._Costs(SYSTEM, None, Workload(100, 11, concurrency=8))
    assert costs.closed_loop_mean(8, 8) == costs.closed_loop_mean(8, 8)
    flat = cpu_system._Costs(NO_STACK, None, Workload(100, 11, concurrency=8)).closed_loop_mean(8, 8)
    assert flat.ttft_s == pytest.approx(0.085) and flat.itl_s == pytest.approx(
        0.026
    )  # 5 + 8 x 10; 10 + 8 x 2


# the stack's time per request grows by 1 ms per other streaming user: o(b) = 4 + (b - 1) ms
LOADED = dataclasses.replace(SYSTEM, request_overhead_per_user_s=0.001)


def test_other_users_lengthen_the_stack_path_not_the_handover() -> None:
    r = loop(LOADED, 2, 3)
    # the handover is o1 = 4 ms as in the two-user run above (same steps: 19, 46, 60, 72); each request's
    # first token's path gains o(2) - o1 = 1 ms: TTFT 19 + 1 and 46 + 1, latency 60 + 1 and 72 + 1
    assert r.ttft_s == pytest.approx((0.020 + 0.047) / 2)
    assert r.latency_s == pytest.approx((0.061 + 0.073) / 2)
    assert r.itl_s == pytest.approx((0.0205 + 0.013) / 2)
    assert r.output_tokens_per_s == pytest.approx(2 * 3 / 0.072)


def test_stack_time_grows_with_the_users_up_to_the_batch() -> None:
    costs = cpu_system._Costs(LOADED, None, Workload(100, 11, concurrency=4))
    assert costs.stack(1) == pytest.approx(0.004) and costs.stack(4) == pytest.approx(0.007)
    # closed form at 4 users: o(4) = 7 ms + t_pf(1) 15 + t_dec(3) 16 + ITL(4) / 2, ITL(4) = 18 + 3/11 x 15
    itl = 18 + 3 / 11 * 15
    assert costs.ttft(4) * 1e3 == pytest.approx(7 + 15 + 16 + itl / 2)
    # 12 users, batch 8: the stack carries the 8 that stream, o(8) = 11 ms, 4 + 11 - 4 = 11 ms on each path
    r = cpu_system._Costs(LOADED, None, Workload(100, 3, concurrency=12)).closed_loop(12, 8, 1)
    flat = cpu_system._Costs(SYSTEM, None, Workload(100, 3, concurrency=12)).closed_loop(12, 8, 1)
    assert r.ttft_s - flat.ttft_s == pytest.approx(0.007)
    assert r.itl_s == pytest.approx(flat.itl_s)
