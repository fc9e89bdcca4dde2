"""Typed dependencies: every route gets state, database session and caller from here.

Role checks live here, not in route bodies: a route that takes ``AdminUser`` cannot be
reached by anyone else.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.authcache import AuthCache
from konfer.api.db.models import (
    AuthSession,
    Meeting,
    MeetingRole,
    Participant,
    Role,
    User,
    UserStatus,
)
from konfer.api.services import meetings as meeting_service
from konfer.api.state import AppState
from konfer.core.errors import InsufficientPermissions, InvalidToken, MissingToken
from konfer.core.settings import Settings
from konfer.core.tokens import AccessClaims


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.konfer
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def claims_of(request: Request, state: AppState) -> AccessClaims:
    """Claims of the bearer token; the middleware may already have verified it."""
    claims: AccessClaims | None = getattr(request.state, "access_claims", None)
    if claims is not None:
        return claims
    error: InvalidToken | None = getattr(request.state, "access_error", None)
    if error is not None:
        raise error
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not token.strip():
        raise MissingToken()
    if scheme.lower() != "bearer":
        raise InvalidToken("Authorization header must use the Bearer scheme")
    return state.tokens.verify_access(token.strip())


@dataclass(slots=True)
class Principal:
    """The caller: their user row and the sign-in session their token belongs to."""

    user: User
    session_id: uuid.UUID

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin.value


async def load_principal(
    session: AsyncSession, claims: AccessClaims, cache: AuthCache | None = None
) -> Principal:
    """The user behind verified claims, if their session and account are still good."""
    if cache is not None:
        known = cache.get(claims.user_id, claims.session_id)
        if known is not None:
            # Known good and unchanged since: a shared read-only snapshot, no database.
            return Principal(user=known, session_id=claims.session_id)
    row = (
        await session.execute(
            select(User, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        raise InvalidToken()
    user, revoked_at = row
    if revoked_at is not None or user.status != UserStatus.active.value:
        raise InvalidToken("Session has been revoked")
    if cache is not None:
        cache.put(user, claims.session_id)
    return Principal(user=user, session_id=claims.session_id)


_PRINCIPAL = "konfer.principal"


async def current_principal(request: Request) -> Principal:
    """The caller, resolved once per request whichever dependency below asks first.

    Every authenticated request runs this, so it asks for nothing it can avoid: no
    sub-dependencies, and a database session only when the cache does not know the
    caller (the row it loads is detached afterwards; ``SessionUser`` re-attaches it).
    """
    scope = request.scope  # one per request, unlike a lifespan ``state`` a server may share
    resolved: Principal | None = scope.get(_PRINCIPAL)
    if resolved is not None:
        return resolved
    state: AppState = request.app.state.konfer
    claims = claims_of(request, state)
    known = state.auth_cache.get(claims.user_id, claims.session_id)
    if known is not None:
        resolved = Principal(user=known, session_id=claims.session_id)
    else:
        async with state.sessionmaker() as session:
            resolved = await load_principal(session, claims, state.auth_cache)
    scope[_PRINCIPAL] = resolved
    return resolved


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

# The dependencies below call ``current_principal`` rather than depend on it: FastAPI
# spends about as much CPU on one more level of dependencies as the cached check costs.


async def current_user(request: Request) -> User:
    return (await current_principal(request)).user


CurrentUser = Annotated[User, Depends(current_user)]
"""The caller, possibly a cached snapshot: read it, never change it (see ``SessionUser``)."""


async def attach(session: AsyncSession, user: User) -> User:
    """The user attached to this session (a cached snapshot is copied in, unqueried)."""
    if user in session:
        return user
    return await session.merge(user, load=False)


async def session_user(principal: CurrentPrincipal, session: SessionDep) -> User:
    """The caller's row attached to this request's session, for routes that change it."""
    return await attach(session, principal.user)


SessionUser = Annotated[User, Depends(session_user)]


async def admin_user(request: Request) -> User:
    principal = await current_principal(request)
    if not principal.is_admin:
        raise InsufficientPermissions()
    return principal.user


AdminUser = Annotated[User, Depends(admin_user)]


# --- meetings ---------------------------------------------------------------------------


@dataclass(slots=True)
class MeetingAccess:
    """A meeting as the caller may see it: the row, the caller, and their membership."""

    meeting: Meeting
    principal: Principal
    participant: Participant | None

    @property
    def user(self) -> User:
        return self.principal.user

    @property
    def role(self) -> str | None:
        """The caller's meeting role (host, co-host, participant, viewer), if a member."""
        return self.participant.role if self.participant else None

    @property
    def is_host(self) -> bool:
        return self.role == MeetingRole.host.value

    @property
    def manages(self) -> bool:
        return self.role in (MeetingRole.host.value, MeetingRole.co_host.value)


async def visible_meeting(
    meeting_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> MeetingAccess:
    """The path's meeting if the caller created it, belongs to it or is an admin; else 404,
    the same answer as for a meeting that does not exist."""
    meeting = await session.get(Meeting, meeting_id)
    if meeting is None:
        raise meeting_service.not_found(meeting_id)
    participant = await meeting_service.membership(session, meeting.id, principal.user.id)
    if participant is None and not principal.is_admin and meeting.creator_id != principal.user.id:
        raise meeting_service.not_found(meeting_id)
    return MeetingAccess(meeting=meeting, principal=principal, participant=participant)


VisibleMeeting = Annotated[MeetingAccess, Depends(visible_meeting)]


async def meeting_host(access: VisibleMeeting) -> MeetingAccess:
    """Callers holding the host or co-host role of the meeting, who run it."""
    if not access.manages:
        raise InsufficientPermissions("Only the meeting's host or co-hosts can do this")
    return access


MeetingHost = Annotated[MeetingAccess, Depends(meeting_host)]


async def meeting_owner(access: VisibleMeeting) -> MeetingAccess:
    """A host of the meeting (its creator unless they handed it over) or an admin."""
    if not (access.is_host or access.principal.is_admin):
        raise InsufficientPermissions("Only the meeting's host or an administrator can do this")
    return access


MeetingOwner = Annotated[MeetingAccess, Depends(meeting_owner)]
