-- Debt from rides already taken (ChargeRequest.allow_debt, user.proto). The journey service
-- settles offline taps, and closings with no rider at the gate, by charging the whole fare
-- whatever the balance: a ride taken is never lost, and balance = sum(ledger) still holds.
-- An available balance (balance - held) below zero is a debt.
--
-- check_available_non_negative (balance - held >= 0 for every card) becomes: an ACTIVE card
-- never has a negative available balance. A debt charge therefore suspends an active card
-- before it takes the money, and a credit lifts a debt suspension only once the available
-- balance is back to >= 0 (services/user/app.py); an operator cannot re-activate a card in
-- debt. No other move lowers the available balance below zero: a capture takes at most what
-- its hold reserved, releases and credits raise it, and a hold (below) needs it.
ALTER TABLE users DROP CONSTRAINT check_available_non_negative;
ALTER TABLE users ADD CONSTRAINT check_active_not_in_debt
    CHECK (balance - held >= 0 OR status <> 'active');

-- A hold reserves money the wallet has: placing one never takes the available balance below
-- zero, whatever the card's status (so a card in debt can hold nothing). Runs after
-- holds_maintain_held has raised `held` (AFTER triggers of an event fire in name order).
CREATE FUNCTION holds_within_available() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM users WHERE id = NEW.user_id AND balance - held < 0) THEN
        RAISE EXCEPTION 'hold % exceeds the available balance', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER holds_within_available AFTER INSERT ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_within_available();
