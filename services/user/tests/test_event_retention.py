"""The event-retention job runs in every service (libs/server/runtime.py); here in the user
service: published outbox rows and handled inbox rows older than the retention go by
themselves, recent and unpublished ones stay."""

from __future__ import annotations

from tests.support.waiting import wait_until

OLD = "now() - interval '200 hours'"  # beyond the default retention of 168 hours


async def test_old_published_and_handled_event_rows_are_deleted_by_the_service(db) -> None:
    await db.execute(
        "INSERT INTO outbox (event_id, event_type, body, created_at, sent_at) VALUES"
        f" (gen_random_uuid(), 'old.sent', '{{}}', {OLD}, {OLD}),"
        f" (gen_random_uuid(), 'old.unsent', '{{}}', {OLD}, NULL),"
        " (gen_random_uuid(), 'new.sent', '{}', now(), now())"
    )
    await db.execute(
        "INSERT INTO inbox (consumer, event_id, event_type, handled_at) VALUES"
        f" ('c', gen_random_uuid(), 'old', {OLD}), ('c', gen_random_uuid(), 'new', now())"
    )

    async def purged() -> bool:
        cur = await db.execute(
            "SELECT (SELECT array_agg(event_type ORDER BY event_type) FROM outbox),"
            " (SELECT array_agg(event_type) FROM inbox)"
        )
        return await cur.fetchone() == (["new.sent", "old.unsent"], ["new"])

    await wait_until(purged, "the retention job to delete the old rows", within=15)
