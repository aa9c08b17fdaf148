-- A hold leaving 'held' now lowers users.held BEFORE its row is updated, instead of AFTER.
-- CaptureHold is one statement (services/user/store.py CAPTURE_HOLD): it updates the hold and
-- debits the wallet together, and AFTER row triggers of a statement run only when it ends, so
-- the debit would meet a `held` that still counts the hold being captured and break
-- check_available_non_negative. Placing a hold stays AFTER INSERT: a BEFORE INSERT trigger
-- would raise `held` even for a row that ON CONFLICT DO NOTHING then skips.
CREATE OR REPLACE FUNCTION holds_maintain_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'held' THEN
            RAISE EXCEPTION 'a hold starts in status held';
        END IF;
        UPDATE users SET held = held + NEW.amount, updated_at = now() WHERE id = NEW.user_id;
    ELSIF NEW.user_id <> OLD.user_id OR NEW.amount <> OLD.amount OR NEW.reference <> OLD.reference THEN
        RAISE EXCEPTION 'the user, amount and reference of hold % are fixed', OLD.id;
    ELSIF OLD.status = 'held' AND NEW.status <> 'held' THEN
        UPDATE users SET held = held - OLD.amount, updated_at = now() WHERE id = OLD.user_id;
    ELSIF OLD.status <> NEW.status THEN
        RAISE EXCEPTION 'hold % cannot go from % to %', OLD.id, OLD.status, NEW.status;
    END IF;
    RETURN NEW;  -- ignored after the insert; before the update, the row to write
END;
$$;

DROP TRIGGER holds_maintain_held ON holds;
CREATE TRIGGER holds_maintain_held AFTER INSERT ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_maintain_held();
CREATE TRIGGER holds_release_held BEFORE UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_maintain_held();
