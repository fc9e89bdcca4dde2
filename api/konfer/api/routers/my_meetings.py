"""``/api/v1/my/meetings*``: the caller's own meetings — all, upcoming, and history.

"Mine" means created by the caller or with the caller as a participant (invited or
joined). Ordering and the meaning of upcoming/history are in ``services.meetings``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from konfer.api.deps import CurrentUser, SessionDep, StateDep
from konfer.api.schemas.common import PageParams, Pagination
from konfer.api.schemas.meetings import MeetingList, MeetingStatusName
from konfer.api.services import meetings
from konfer.api.services.meetings import MineScope

router = APIRouter(prefix="/api/v1/my", tags=["meetings"])

Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]


async def _mine(
    scope: MineScope,
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    page: int,
    page_size: int,
    status: str | None = None,
) -> MeetingList:
    params = PageParams(page=page, page_size=page_size)
    found, total = await meetings.list_mine(session, user, scope, params, status)
    return MeetingList(
        meetings=await meetings.publics(state.presence, state.settings, found),
        pagination=Pagination.of(page, page_size, total),
    )


@router.get("/meetings", response_model=MeetingList)
async def my_meetings(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    page: Page = 1,
    page_size: PageSize = 20,
    status: MeetingStatusName | None = None,
) -> MeetingList:
    """Meetings I created or belong to, latest start first."""
    return await _mine("all", user, session, state, page, page_size, status)


@router.get("/meetings/upcoming", response_model=MeetingList)
async def my_upcoming_meetings(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    page: Page = 1,
    page_size: PageSize = 20,
) -> MeetingList:
    """Scheduled meetings that have not begun yet, soonest first."""
    return await _mine("upcoming", user, session, state, page, page_size)


@router.get("/meetings/history", response_model=MeetingList)
async def my_meeting_history(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    page: Page = 1,
    page_size: PageSize = 20,
) -> MeetingList:
    """Ended meetings, and scheduled ones whose end time has passed; newest first."""
    return await _mine("history", user, session, state, page, page_size)
