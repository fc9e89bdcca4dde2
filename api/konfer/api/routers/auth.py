"""``/api/v1/auth/*`` and ``/api/v1/csrf-token``."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, BackgroundTasks, Request, status

from konfer.api.deps import CurrentPrincipal, SessionDep, StateDep
from konfer.api.schemas.auth import (
    CsrfToken,
    ForgotPasswordRequest,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    TokenPair,
)
from konfer.api.schemas.common import Message
from konfer.api.schemas.users import UserCreated
from konfer.api.services import auth, mail
from konfer.core.errors import AccountBanned, InvalidCredentials

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/csrf-token", response_model=CsrfToken)
async def csrf_token(state: StateDep, request: Request) -> CsrfToken:
    """A signed anti-CSRF token for browser forms; bearer-token calls do not need it."""
    subject = request.client.host if request.client else "anonymous"
    token, exp = state.tokens.issue_csrf(subject, state.settings.csrf_token_ttl_seconds)
    return CsrfToken(token=token, expires_at=datetime.fromtimestamp(exp, UTC))


@router.post("/auth/register", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, session: SessionDep, state: StateDep) -> UserCreated:
    user = await auth.register(
        session,
        state.passwords,
        username=body.username,
        email=str(body.email),
        password=body.password,
        nickname=body.nickname,
    )
    assert user.email is not None
    return UserCreated(
        user_id=user.id, username=user.username, email=user.email, created_at=user.created_at
    )


@router.post("/auth/login", response_model=TokenPair)
async def login(
    body: LoginRequest, session: SessionDep, state: StateDep, request: Request
) -> TokenPair:
    try:
        pair = await auth.login(
            session,
            state.settings,
            state.tokens,
            state.passwords,
            identifier=body.identifier,
            password=body.password,
            user_agent=request.headers.get("user-agent"),
            ip=request.client.host if request.client else None,
        )
    except (InvalidCredentials, AccountBanned) as exc:
        state.metrics.logins.labels("banned" if isinstance(exc, AccountBanned) else "failed").inc()
        raise
    state.metrics.logins.labels("ok").inc()
    return pair


@router.post("/auth/refresh", response_model=TokenPair)
async def refresh(body: RefreshRequest, session: SessionDep, state: StateDep) -> TokenPair:
    return await auth.refresh(session, state.settings, state.tokens, body.refresh_token)


@router.post("/auth/logout", response_model=Message)
async def logout(principal: CurrentPrincipal, session: SessionDep) -> Message:
    await auth.revoke_sessions(
        session, principal.user.id, reason="logout", only=principal.session_id
    )
    await session.commit()
    return Message(message="Logged out successfully")


@router.post("/auth/forgot-password", response_model=Message)
async def forgot_password(
    body: ForgotPasswordRequest, session: SessionDep, state: StateDep, tasks: BackgroundTasks
) -> Message:
    outbox_id = await auth.forgot_password(session, state.settings, str(body.email))
    if outbox_id is not None:
        tasks.add_task(mail.deliver, state.settings, state.sessionmaker, outbox_id)
    return Message(message="If an account with that email exists, a reset link has been sent")


@router.post("/auth/reset-password", response_model=Message)
async def reset_password(
    body: ResetPasswordRequest, session: SessionDep, state: StateDep
) -> Message:
    await auth.reset_password(session, state.passwords, body.token, body.new_password)
    return Message(message="Password has been reset; sign in with the new password")
