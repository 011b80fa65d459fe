"""The budget gate: admission, settling, learning the cost, and the guarantees a run relies on."""

from __future__ import annotations

import math
import pickle
import random
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import phaseo_notebook as pn
from phaseo_notebook._budget import BudgetGate, Reservation

NANO = 1e-9


# -- single decisions -------------------------------------------------------------------------


def test_admits_exactly_up_to_the_budget() -> None:
    gate = BudgetGate(0.3)
    assert gate.try_reserve(0.1) is not None
    assert gate.try_reserve(0.2) is not None  # 0.1 + 0.2 == 0.3: admitted, no float drift
    assert gate.try_reserve(NANO) is None
    assert gate.reserved == pytest.approx(0.3)
    assert gate.remaining == 0
    assert gate.refusal is not None and "would be exceeded" in gate.refusal


def test_spent_plus_reserved_plus_estimate_is_the_rule() -> None:
    gate = BudgetGate(1.0)
    a = gate.try_reserve(0.4)
    assert a is not None
    gate.settle(a, 0.5)  # the answer cost more than estimated
    assert gate.spent == 0.5
    assert gate.try_reserve(0.6) is None  # 0.5 spent + 0.6 > 1
    b = gate.try_reserve(0.3)
    assert b is not None
    assert gate.try_reserve(0.3) is None  # 0.5 + 0.3 reserved + 0.3 > 1
    gate.release(b)  # failed: nothing charged, room again
    assert gate.spent == 0.5 and gate.reserved == 0
    assert gate.try_reserve(0.5) is not None


def test_settle_counts_the_reported_cost_else_the_estimate() -> None:
    gate = BudgetGate(1.0)
    r = gate.try_reserve(0.25)
    assert r is not None
    assert gate.settle(r, None) == 0.25
    r = gate.try_reserve(0.25)
    assert r is not None
    assert gate.settle(r, 0.01) == 0.01
    assert gate.spent == pytest.approx(0.26)
    assert gate.settled == 2 and gate.in_flight == 0


def test_a_reservation_closes_once_and_only_in_its_gate() -> None:
    gate, other = BudgetGate(1.0), BudgetGate(1.0)
    r = gate.try_reserve(0.1)
    assert r is not None
    with pytest.raises(ValueError, match="not open"):
        other.settle(r, 0.1)
    gate.settle(r, 0.1)
    with pytest.raises(ValueError, match="not open"):
        gate.settle(r, 0.1)
    with pytest.raises(ValueError, match="not open"):
        gate.release(r)
    assert gate.spent == 0.1


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_amounts_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        BudgetGate(bad)
    with pytest.raises(ValueError):
        BudgetGate(1.0, price_per_minute=bad)
    gate = BudgetGate(1.0)
    with pytest.raises(ValueError):
        gate.try_reserve(bad)
    r = gate.try_reserve(0.1)
    assert r is not None
    with pytest.raises(ValueError):
        gate.settle(r, bad)


def test_estimate_from_the_price() -> None:
    gate = BudgetGate(1.0, price_per_minute=0.006)
    assert gate.estimate(60.0) == 0.006
    assert gate.estimate(2.0) == pytest.approx(0.0002)
    assert gate.estimate(None) is None  # unknown length, nothing observed yet
    assert gate.admission_limit(8) == 8


def test_estimate_learned_from_answers_per_second_and_per_request() -> None:
    gate = BudgetGate(10.0)
    assert gate.estimate(10.0) is None and gate.admission_limit(8) == 1
    gate.observe(0.01, 10.0)  # 0.001 per audio-second
    gate.observe(0.03, None)  # an answer of unknown length: only the per-request mean
    assert gate.estimate(5.0) == pytest.approx(0.005)
    assert gate.estimate(None) == pytest.approx(0.02)  # mean cost per request
    assert gate.admission_limit(8) == 8
    assert gate.spent == 0  # observations are not spending


def test_settle_teaches_the_cost() -> None:
    gate = BudgetGate(1.0)
    r = gate.try_reserve(gate.estimate(4.0))
    assert r is not None and r.estimate is None
    gate.settle(r, 0.004, seconds=4.0)
    assert gate.estimate(2.0) == pytest.approx(0.002)


def test_without_an_estimate_one_request_at_a_time() -> None:
    gate = BudgetGate(1.0)
    first = gate.try_reserve(None)
    assert first is not None
    assert gate.try_reserve(None) is None
    assert gate.refusal is not None and "waiting for the answer" in gate.refusal
    gate.settle(first, 0.5, seconds=10.0)
    assert gate.try_reserve(gate.estimate(10.0)) is not None


def test_a_spent_budget_admits_no_probe() -> None:
    gate = BudgetGate(0.0)
    assert gate.try_reserve(None) is None
    assert gate.refusal is not None and "reached" in gate.refusal
    assert gate.try_reserve(0.0) is not None  # free requests still fit a zero budget


def test_no_price_and_no_reported_cost_cannot_be_budgeted() -> None:
    gate = BudgetGate(1.0)
    r = gate.try_reserve(gate.estimate(3.0))
    assert r is not None
    assert gate.settle(r, None, seconds=3.0) == 0
    assert gate.unpriced == 1
    assert gate.estimate(3.0) is None
    assert gate.try_reserve(None) is None
    assert gate.refusal is not None and "pass prices=" in gate.refusal


def test_error_is_a_budget_exceeded_error_with_the_refusal() -> None:
    gate = BudgetGate(0.5, price_per_minute=0.006)
    r = gate.try_reserve(0.4)
    assert r is not None
    gate.settle(r, 0.45)
    assert gate.try_reserve(0.1) is None
    err = gate.error()
    assert isinstance(err, pn.BudgetExceededError) and isinstance(err, pn.PhaseoError)
    assert str(err) == gate.refusal
    assert (err.budget, err.spent, err.currency) == (0.5, 0.45, "USD")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.budget, back.spent) == (str(err), 0.5, 0.45)
    row_error = f"{type(err).__name__}: {err}"
    assert row_error.startswith("BudgetExceededError: budget of 0.5 USD would be exceeded")


def test_repr_is_readable() -> None:
    gate = BudgetGate(2.0)
    gate.try_reserve(0.5)
    assert repr(gate) == "BudgetGate(budget=2 USD, spent=0, reserved=0.5, in_flight=1)"


# -- a run, simulated: the batch engine's use of the gate, with answers in random order -------


@dataclass
class RunOutcome:
    sent: int
    unsent: int
    spent_nanos: int
    #: The actual cost of the requests in flight right after the last admission.
    in_flight_at_last_admission: int
    #: The estimate of the request whose refusal ended the run (None: none refused).
    refused_estimate: float | None


def simulate_run(
    gate: BudgetGate,
    jobs: list[tuple[float | None, int]],
    *,
    limit: int,
    seed: int,
    report_costs: bool = True,
) -> RunOutcome:
    """Dispatch jobs ``(seconds, actual cost in nanos)`` as the batch engine will.

    Reserve before sending; when refused wait for an answer if any is in flight, else stop;
    answers arrive in a random order.
    """
    rng = random.Random(seed)
    pending = deque(jobs)
    flight: list[tuple[Reservation, float | None, int]] = []
    sent = 0
    last_flight = 0
    refused: float | None = None
    while pending or flight:
        while pending and len(flight) < gate.admission_limit(limit):
            seconds, actual = pending[0]
            estimate = gate.estimate(seconds)
            reservation = gate.try_reserve(estimate)
            if reservation is None:
                refused = estimate
                break
            pending.popleft()
            flight.append((reservation, seconds, actual))
            sent += 1
            last_flight = sum(a for _, _, a in flight)
        if not flight:
            break  # a refusal with nothing in flight is final
        reservation, seconds, actual = flight.pop(rng.randrange(len(flight)))
        gate.settle(reservation, actual * NANO if report_costs else None, seconds=seconds)
    if not pending:
        refused = None
    return RunOutcome(sent, len(pending), round(gate.spent * 1e9), last_flight, refused)


def test_equal_requests_use_the_whole_budget() -> None:
    # 300 clips of 2 s at $0.006/min cost $0.0002 each; a budget of $0.03 pays for 150.
    gate = BudgetGate(0.03, price_per_minute=0.006)
    out = simulate_run(gate, [(2.0, 200_000)] * 300, limit=16, seed=1)
    assert (out.sent, out.unsent) == (150, 150)
    assert gate.spent == pytest.approx(0.03)
    assert gate.in_flight == 0 and gate.reserved == 0


def test_costs_only_from_answers_start_slow_then_fill_the_budget() -> None:
    gate = BudgetGate(0.03)  # no price: the first answer teaches it
    limits: list[int] = []
    original = gate.admission_limit

    def spy(limit: int) -> int:
        limits.append(original(limit))
        return limits[-1]

    gate.admission_limit = spy  # type: ignore[method-assign]
    out = simulate_run(gate, [(2.0, 200_000)] * 300, limit=16, seed=2)
    assert limits[0] == 1 and limits[-1] == 16
    assert (out.sent, out.unsent) == (150, 150)


@settings(max_examples=300, deadline=None)
@given(
    budget_nanos=st.integers(0, 5_000_000),
    cost_nanos=st.integers(1, 300_000),
    count=st.integers(0, 120),
    limit=st.integers(1, 32),
    priced=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_equal_costs_admit_floor_budget_over_cost(
    budget_nanos: int, cost_nanos: int, count: int, limit: int, priced: bool, seed: int
) -> None:
    seconds = 2.0
    price = cost_nanos * NANO * 60 / seconds if priced else None
    gate = BudgetGate(budget_nanos * NANO, price_per_minute=price)
    out = simulate_run(gate, [(seconds, cost_nanos)] * count, limit=limit, seed=seed)
    fits = budget_nanos // cost_nanos
    if not priced and budget_nanos > 0:
        # With nothing known the first request goes alone, even one the budget cannot pay
        # for: its cost is the in-flight overspend the guarantee allows.
        fits = max(fits, 1)
    assert out.sent == min(count, fits)
    assert out.spent_nanos <= budget_nanos + (0 if priced else cost_nanos)


job_lists = st.lists(
    st.tuples(st.one_of(st.none(), st.floats(0.1, 600.0)), st.integers(0, 2_000_000)),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(
    budget_nanos=st.integers(0, 20_000_000),
    jobs=job_lists,
    limit=st.integers(1, 32),
    price=st.one_of(st.none(), st.floats(0.0, 0.05)),
    seed=st.integers(0, 2**32),
)
def test_overspend_is_at_most_what_was_in_flight_when_the_budget_ran_out(
    budget_nanos: int,
    jobs: list[tuple[float | None, int]],
    limit: int,
    price: float | None,
    seed: int,
) -> None:
    # Actual costs are arbitrary: they need not match any estimate.
    gate = BudgetGate(budget_nanos * NANO, price_per_minute=price)
    out = simulate_run(gate, jobs, limit=limit, seed=seed)
    assert out.sent + out.unsent == len(jobs)
    assert out.spent_nanos <= budget_nanos + out.in_flight_at_last_admission
    assert gate.in_flight == 0 and gate.reserved == 0


@settings(max_examples=300, deadline=None)
@given(
    budget_nanos=st.integers(0, 20_000_000),
    seconds=st.lists(st.floats(0.1, 600.0), max_size=80),
    limit=st.integers(1, 32),
    price=st.floats(0.0001, 0.05),
    seed=st.integers(0, 2**32),
)
def test_answers_that_cost_their_estimate_never_overspend_nor_stop_early(
    budget_nanos: int, seconds: list[float], limit: int, price: float, seed: int
) -> None:
    gate = BudgetGate(budget_nanos * NANO, price_per_minute=price)
    jobs = [(s, round(price * s / 60 * 1e9)) for s in seconds]
    out = simulate_run(gate, jobs, limit=limit, seed=seed)
    assert out.spent_nanos <= budget_nanos
    if out.unsent:
        # It stopped only because the next request would not have fitted.
        assert out.refused_estimate is not None
        assert out.spent_nanos + round(out.refused_estimate * 1e9) > budget_nanos


@settings(max_examples=200, deadline=None)
@given(
    budget_nanos=st.integers(1, 10_000_000),
    jobs=job_lists,
    limit=st.integers(1, 16),
    seed=st.integers(0, 2**32),
)
def test_answers_without_costs_are_counted_at_their_estimate(
    budget_nanos: int, jobs: list[tuple[float | None, int]], limit: int, seed: int
) -> None:
    gate = BudgetGate(budget_nanos * NANO, price_per_minute=0.006)
    out = simulate_run(gate, jobs, limit=limit, seed=seed, report_costs=False)
    assert out.spent_nanos <= budget_nanos
    if any(s is None for s, _ in jobs):
        # No cost is ever reported and the price needs a length: the first request of
        # unknown length waits alone, and afterwards the run must stop there.
        assert gate.unpriced <= 1
