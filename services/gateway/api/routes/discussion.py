"""The per-study discussion: the semi-collaborative part of the review.

Open to a study's readers once their own vote is in, and to curators. It shows every reader's
vote and comment next to the thread, which is exactly what the blind first read hides before.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, field_validator

from services.gateway.access import BLIND_READ, require_discussion_access
from services.gateway.auth import CurrentUser
from services.gateway.deps import Res
from services.gateway.api.models import RequestBody

router = APIRouter(prefix="/api/v1/studies", tags=["discussion"])


class PostIn(RequestBody):
    body: str = Field(min_length=1, max_length=4000)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the post is empty")
        return v.strip()


class Post(BaseModel):
    post_id: int
    author_id: str
    author_role: str
    body: str
    posted_at: str


class ReaderVote(BaseModel):
    reader_id: str
    verdict: str | None  # None for a lumbar read, which carries `grades`
    added_labels: list[str]
    removed_labels: list[str]
    comment: str
    cast_at: str
    grades: list[dict] | None = None


class Discussion(BaseModel):
    study_id: str
    votes: list[ReaderVote]
    posts: list[Post]


@router.get("/{study_id}/discussion", responses={403: {"description": BLIND_READ}})
async def get_discussion(study_id: str, user: CurrentUser, res: Res) -> Discussion:
    """Every reader's vote and comment, and the thread (after the caller's own vote)."""
    async with res.pool.connection() as conn:
        await require_discussion_access(conn, user, study_id)
        cur = await conn.execute(
            "SELECT reader_id, verdict, added_labels, removed_labels, comment, cast_at, grades FROM votes"
            " WHERE study_id = %s ORDER BY cast_at, vote_id", (study_id,))
        votes = [ReaderVote(**{**r, "cast_at": r["cast_at"].isoformat()}) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT post_id, author_id, author_role, body, posted_at FROM discussion_posts"
            " WHERE study_id = %s ORDER BY post_id", (study_id,))
        posts = [Post(**{**r, "posted_at": r["posted_at"].isoformat()}) for r in await cur.fetchall()]
    return Discussion(study_id=study_id, votes=votes, posts=posts)


@router.post("/{study_id}/discussion", status_code=status.HTTP_201_CREATED,
             responses={403: {"description": BLIND_READ}})
async def post_to_discussion(study_id: str, body: PostIn, user: CurrentUser, res: Res) -> Post:
    """Add to the study's thread (after the caller's own vote)."""
    async with res.pool.connection() as conn:
        await require_discussion_access(conn, user, study_id)
        cur = await conn.execute(
            "INSERT INTO discussion_posts (study_id, author_id, author_role, body) VALUES (%s,%s,%s,%s)"
            " RETURNING post_id, author_id, author_role, body, posted_at",
            (study_id, user.user_id, user.role.value, body.body))
        row = await cur.fetchone()
    return Post(**{**row, "posted_at": row["posted_at"].isoformat()})
