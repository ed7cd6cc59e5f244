"""The service's container cap (pool.budget): slots, FIFO hand-over, evictions, bounded waits."""

from __future__ import annotations

import asyncio

import pytest

from pool.budget import ContainerBudget
from pool.errors import PoolWaitTimeout


async def test_slots_up_to_the_cap_then_fifo_hand_over() -> None:
    budget = ContainerBudget(2)
    assert budget.try_take() and budget.try_take() and not budget.try_take()
    first, second = budget.request(), budget.request()
    assert not first.done() and budget.waiting == 2
    assert not budget.try_take()  # no overtaking of the queue
    budget.give_back()
    assert first.done() and not second.done() and budget.used == 2
    budget.cancel(second)
    budget.give_back()
    budget.give_back()
    assert budget.used == 0 and budget.waiting == 0
    assert budget.report() == {"max_containers": 2, "containers": 0, "waiting": 0}


async def test_a_full_budget_asks_for_one_eviction_per_waiter() -> None:
    asked: list[object] = []

    def evict(requester: object) -> bool:
        asked.append(requester)
        budget.evicting += 1  # what WarmPool.evict does
        return True

    budget = ContainerBudget(1, evict=evict)
    assert budget.try_take()
    waiter = budget.request("pool-a")
    assert asked == ["pool-a"] and not budget.wants_eviction()
    budget.give_back(evicted=True)  # the evicted container is gone: its slot goes to the waiter
    assert waiter.done() and budget.evicting == 0 and budget.used == 1


async def test_take_times_out_and_a_cancelled_waiter_gives_its_slot_back() -> None:
    budget = ContainerBudget(1)
    assert budget.try_take()
    with pytest.raises(PoolWaitTimeout, match="max_containers"):
        await budget.take(0.05)
    assert budget.waiting == 0
    task = asyncio.create_task(budget.take(10))
    await asyncio.sleep(0)
    budget.give_back()  # handed to the task...
    task.cancel()  # ...which is cancelled before it runs: it holds the slot or gave it back, never leaks it
    try:
        await task
        holds = 1
    except asyncio.CancelledError:
        holds = 0
    assert budget.used == holds


async def test_a_slot_is_held_for_a_one_shot_container() -> None:
    budget = ContainerBudget(1)
    async with budget.slot(1.0):
        assert budget.used == 1
        with pytest.raises(PoolWaitTimeout):
            await budget.take(0.05)
    assert budget.used == 0
