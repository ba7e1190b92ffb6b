"""Who may see what of a study: the blind-first-read rule in one place.

A reviewer sees a study only while it is on their worklist (an open or voted read; a read that
expired or was moved away is gone), and sees other readers' votes and comments only after their
own vote is in. Curators see everything; other roles see no studies. Once a release holds a
study out, no reader sees it any more (its images, DICOM links and discussion would otherwise
leak holdout labels to anyone who read it): it answers 404 like any study not on the worklist.
"""

from __future__ import annotations

from services.gateway.auth import Role, User
from services.gateway.problems import Problem
from services.gateway.repo import assignments, studies

BLIND_READ = "the discussion opens after your own vote: other readers' votes stay hidden until then (blind first read)"


async def own_read(conn, user: User, study_id: str) -> dict | None:
    """The caller's live read of the study (None for curators); refuses everyone else."""
    if user.role in (Role.CURATOR, Role.ADMIN):
        return None
    if user.role != Role.REVIEWER:
        raise Problem(403, "studies are visible to their readers and to curators")
    row = await assignments.live_read(conn, study_id, user.user_id)
    if row is None:
        raise Problem(404, f"no study {study_id!r} on your worklist")
    return row


async def require_discussion_access(conn, user: User, study_id: str) -> None:
    """Curators always; a reader once their own vote on the study is in."""
    read = await own_read(conn, user, study_id)
    if read is None:
        if not await studies.exists(conn, study_id):
            raise Problem(404, f"no study {study_id!r}")
    elif read["status"] != "voted":
        raise Problem(403, BLIND_READ, type_="https://radcurate.dev/problems/blind-first-read")
