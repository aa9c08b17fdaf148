-- check_release_reason was ((status = 'released') = (release_reason IN ('released', 'expired'))):
-- with a NULL release_reason the comparison is NULL, which a CHECK lets through, so a released
-- hold could have no reason (and a hold still held or captured any reason outside the list).
-- Now a released hold names why, and no other hold has a release reason. No code path writes
-- either (store.release_holds always names one); rows an older bug or a hand edit left are
-- put right first: a release without a recorded reason counts as an explicit release.
UPDATE holds SET release_reason = 'released' WHERE status = 'released' AND release_reason IS NULL;
UPDATE holds SET release_reason = NULL WHERE status <> 'released' AND release_reason IS NOT NULL;

ALTER TABLE holds DROP CONSTRAINT check_release_reason;
ALTER TABLE holds ADD CONSTRAINT check_release_reason CHECK (
    CASE WHEN status = 'released'
         THEN release_reason IS NOT NULL AND release_reason IN ('released', 'expired')
         ELSE release_reason IS NULL
    END
);
