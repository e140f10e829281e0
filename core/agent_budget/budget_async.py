"""The async forms of :class:`~agent_budget.Budget`'s calls: a store that waits on a disk or a
network is never awaited on the event loop; one that does no I/O answers inline."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import reserving
from .admission import Refused
from .aio import off_loop
from .records import UsageRecord
from .reservation import Reservation
from .usage import Usage

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["acheck", "acommit", "arelease", "areserve"]

log = logging.getLogger("agent_budget")


async def areserve(
    self: Budget,
    model: str,
    input_tokens: int,
    max_output_tokens: int = 0,
    *,
    session_id: str = "",
    ttl: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    clamp: bool = False,
    min_output_tokens: int = 1,
    wait: float = 0.0,
    output_from: str | None = None,
    service_tier: str | None = None,
) -> Reservation:
    """:meth:`reserve` for async code: the store is never awaited on the event loop and
    ``wait`` polls without blocking it. If the awaiting task is cancelled while the
    store answers, a hold it took is released, so a cancelled call never keeps budget."""
    if not self.store.does_io and not wait:  # nothing to wait on: the sync path
        return self.reserve(
            model,
            input_tokens,
            max_output_tokens,
            session_id=session_id,
            ttl=ttl,
            metadata=metadata,
            clamp=clamp,
            min_output_tokens=min_output_tokens,
            output_from=output_from,
            service_tier=service_tier,
        )
    plan = self._plan(
        model,
        input_tokens,
        max_output_tokens,
        session_id,
        ttl,
        metadata,
        clamp,
        min_output_tokens,
        wait,
        output_from,
        service_tier,
    )
    if self.store.does_io:
        outcome = await off_loop(lambda: reserving.attempt(self, plan), undo=_release_held)
    else:
        outcome = reserving.attempt(self, plan)
    if isinstance(outcome, Refused) and wait and outcome.waitable:
        outcome = await reserving.wait_async(self, plan, outcome, wait)
    if isinstance(outcome, Refused):
        error = reserving.refusal(self, plan, outcome, waited=wait)
        note = functools.partial(self._refused, error, plan.resolved.name, plan.session_id)
        if self.store.does_io:
            await off_loop(note)
        else:
            note()
        raise error
    return outcome


async def acommit(
    self: Budget,
    reservation: Reservation,
    usage: Usage | None = None,
    *,
    model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    estimated: bool | None = None,
) -> UsageRecord:
    """:meth:`commit` for async code; the commit completes even if the task is cancelled."""
    if not self.store.does_io:
        return self.commit(reservation, usage, model=model, metadata=metadata, estimated=estimated)
    call = functools.partial(
        self.commit, reservation, usage, model=model, metadata=metadata, estimated=estimated
    )
    return await off_loop(call)


async def arelease(self: Budget, reservation: Reservation) -> bool:
    """:meth:`release` for async code."""
    if not self.store.does_io:
        return self.release(reservation)
    return await off_loop(functools.partial(self.release, reservation))


async def acheck(self: Budget, model: str, input_tokens: int, output_tokens: int = 0) -> None:
    """:meth:`check` for async code."""
    if not self.store.does_io:
        return self.check(model, input_tokens, output_tokens)
    return await off_loop(functools.partial(self.check, model, input_tokens, output_tokens))


def _release_held(outcome: Reservation | Refused) -> None:
    if not isinstance(outcome, Reservation):
        return
    try:
        outcome.release()
    except Exception:
        log.warning("could not release hold %s of a cancelled call", outcome.id, exc_info=True)
