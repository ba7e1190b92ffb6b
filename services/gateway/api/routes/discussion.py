"""The per-study discussion: the semi-collaborative part of the review.

Open to a study's readers once their own vote is in, and to curators. It shows every reader's
vote and comment next to the thread, which is exactly what the blind first read hides before.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.gateway.access import BLIND_READ, require_discussion_access
from services.gateway.api.models import RequestBody
from services.gateway.auth import CurrentUser
from services.gateway.deps import Res
from services.gateway.judgements import judgement_fields
from services.gateway.repo import discussion

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
    """A reader's vote with its judgement's fields (those of the study's protocol)."""

    model_config = ConfigDict(extra="allow")

    reader_id: str
    verdict: str | None = None  # a verdict protocol's; None where the protocol grades instead
    added_labels: list[str] = Field(default_factory=list)
    removed_labels: list[str] = Field(default_factory=list)
    comment: str
    cast_at: str
    grades: list[dict] | None = None  # a grading protocol's: a grade (and point) per cell


class Discussion(BaseModel):
    study_id: str
    votes: list[ReaderVote]
    posts: list[Post]


@router.get("/{study_id}/discussion", responses={403: {"description": BLIND_READ}})
async def get_discussion(study_id: str, user: CurrentUser, res: Res) -> Discussion:
    """Every reader's vote and comment, and the thread (after the caller's own vote)."""
    async with res.pool.connection() as conn:
        await require_discussion_access(conn, user, study_id)
        votes = [ReaderVote(**judgement_fields({**r, "cast_at": r["cast_at"].isoformat()}))
                 for r in await discussion.votes(conn, study_id)]
        posts = [Post(**{**r, "posted_at": r["posted_at"].isoformat()}) for r in await discussion.posts(conn, study_id)]
    return Discussion(study_id=study_id, votes=votes, posts=posts)


@router.post("/{study_id}/discussion", status_code=status.HTTP_201_CREATED,
             responses={403: {"description": BLIND_READ}})
async def post_to_discussion(study_id: str, body: PostIn, user: CurrentUser, res: Res) -> Post:
    """Add to the study's thread (after the caller's own vote)."""
    async with res.pool.connection() as conn:
        await require_discussion_access(conn, user, study_id)
        row = await discussion.add_post(conn, study_id, user.user_id, user.role.value, body.body)
    return Post(**{**row, "posted_at": row["posted_at"].isoformat()})
