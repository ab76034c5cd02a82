"""Dispatch slots (scheduler.slots): global and per-pipeline limits, FIFO, fairness,
cancellation."""

from __future__ import annotations

import asyncio

import pytest

from datadog_platform.scheduler.slots import Slots


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def waiter(slots: Slots, key: str, limit: int, got: list[str], name: str) -> asyncio.Task[None]:
    async def take() -> None:
        await slots.acquire(key, limit)
        got.append(name)

    return asyncio.create_task(take())


async def test_the_global_limit_and_fifo_order() -> None:
    slots = Slots(2)
    got: list[str] = []
    tasks = [waiter(slots, "p", 0, got, f"w{i}") for i in range(4)]
    await settle()
    assert got == ["w0", "w1"]
    assert slots.in_use == 2
    slots.release("p")
    await settle()
    assert got == ["w0", "w1", "w2"]
    slots.release("p")
    slots.release("p")
    await settle()
    assert got == ["w0", "w1", "w2", "w3"]
    await asyncio.gather(*tasks)
    assert (slots.in_use, slots.in_use_by("p")) == (1, 1)


async def test_a_pipeline_at_its_limit_does_not_hold_up_others() -> None:
    slots = Slots(10)
    got: list[str] = []
    tasks = [waiter(slots, "narrow", 1, got, f"n{i}") for i in range(3)]
    tasks.append(waiter(slots, "wide", 0, got, "w"))
    await settle()
    assert got == ["n0", "w"]
    slots.release("narrow")
    await settle()
    assert got == ["n0", "w", "n1"]
    assert slots.in_use_by("narrow") == 1
    slots.release("narrow")
    await asyncio.gather(*tasks)


async def test_pipelines_take_turns_for_free_slots() -> None:
    slots = Slots(1)
    got: list[str] = []
    await slots.acquire("a")
    tasks = [waiter(slots, "a", 0, got, f"a{i}") for i in range(3)]
    tasks += [waiter(slots, "b", 0, got, f"b{i}") for i in range(2)]
    await settle()
    for _ in range(5):
        slots.release(got[-1][0] if got else "a")
        await settle()
    assert got == ["a0", "b0", "a1", "b1", "a2"]
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = Slots(1)
    got: list[str] = []
    await slots.acquire("p")
    first = waiter(slots, "p", 0, got, "first")
    second = waiter(slots, "p", 0, got, "second")
    await settle()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    slots.release("p")
    await second
    assert got == ["second"]
    assert slots.in_use == 1


def test_the_global_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
