"""The profile version a recorded de-identification check is reused under (issue 15)."""

from __future__ import annotations

from services.consensus import object_checks


def test_the_profile_version_is_pinned_to_the_profiles_tables():
    """A change to what deid.violations() looks for must bump PROFILE_REVISION (so that no check
    made under the old profile is reused by a release) and then re-pin PROFILE_TABLES_SHA256."""
    assert object_checks.profile_tables_sha256() == object_checks.PROFILE_TABLES_SHA256, (
        "deid's tables changed: bump object_checks.PROFILE_REVISION and re-pin PROFILE_TABLES_SHA256")
    assert object_checks.PROFILE_VERSION.endswith(f"/{object_checks.PROFILE_REVISION}")
