-- User & wallet service (seed 004 §2.1, ARCHITECTURE.md "Concurrency and money").
-- The balance changes only through ledger_entries and `held` only through holds: triggers
-- keep both columns equal to their sums, and CHECKs keep the available balance >= 0.

CREATE TYPE user_status AS ENUM ('active', 'blocked', 'suspended');
CREATE TYPE hold_status AS ENUM ('held', 'captured', 'released');
CREATE TYPE ledger_kind AS ENUM ('top_up', 'capture', 'charge', 'refund');

CREATE TABLE users (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    card_id           VARCHAR(20) NOT NULL UNIQUE,
    full_name         VARCHAR(255) NOT NULL,
    email             VARCHAR(255),
    phone             VARCHAR(20),
    status            user_status NOT NULL DEFAULT 'active',
    status_reason     VARCHAR(255),
    balance           NUMERIC(15,2) NOT NULL DEFAULT 0,
    held              NUMERIC(15,2) NOT NULL DEFAULT 0,
    currency          CHAR(3) NOT NULL DEFAULT 'IDR',
    create_request_id VARCHAR(100) UNIQUE,
    registered_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_card_id_format CHECK (card_id ~ '^[A-Z0-9]{8,20}$'),
    CONSTRAINT check_full_name_present CHECK (length(btrim(full_name)) > 0),
    CONSTRAINT check_held_non_negative CHECK (held >= 0),
    CONSTRAINT check_available_non_negative CHECK (balance - held >= 0)
);

CREATE INDEX idx_users_status ON users (status, registered_at, id);
CREATE INDEX idx_users_registered ON users (registered_at, id);
CREATE INDEX idx_users_updated_at ON users (updated_at);

CREATE TABLE pets (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID NOT NULL REFERENCES users (id),
    name         VARCHAR(100) NOT NULL,
    species      VARCHAR(50) NOT NULL,
    breed        VARCHAR(100),
    birth_date   DATE,
    request_id   VARCHAR(100) UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_pets_user ON pets (user_id, created_at);

CREATE TABLE holds (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        UUID NOT NULL REFERENCES users (id),
    amount         NUMERIC(15,2) NOT NULL,
    final_amount   NUMERIC(15,2),
    status         hold_status NOT NULL DEFAULT 'held',
    reference      VARCHAR(100) NOT NULL UNIQUE,
    reason         VARCHAR(255) NOT NULL DEFAULT 'Trip fare hold',
    release_reason VARCHAR(20),
    expires_at     TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at      TIMESTAMPTZ,

    CONSTRAINT check_hold_amount_positive CHECK (amount > 0),
    CONSTRAINT check_final_amount_within_hold
        CHECK (final_amount IS NULL OR (final_amount >= 0 AND final_amount <= amount)),
    CONSTRAINT check_captured_has_final CHECK ((status = 'captured') = (final_amount IS NOT NULL)),
    CONSTRAINT check_closed_when_not_held CHECK ((status = 'held') = (closed_at IS NULL)),
    CONSTRAINT check_release_reason
        CHECK ((status = 'released') = (release_reason IN ('released', 'expired')))
);

CREATE INDEX idx_holds_user_status ON holds (user_id, status);
CREATE INDEX idx_holds_expires ON holds (expires_at) WHERE status = 'held';

CREATE TABLE ledger_entries (
    id              BIGSERIAL PRIMARY KEY,
    user_id         UUID NOT NULL REFERENCES users (id),
    kind            ledger_kind NOT NULL,
    amount          NUMERIC(15,2) NOT NULL,
    balance_after   NUMERIC(15,2) NOT NULL,
    reference       VARCHAR(100),
    idempotency_key VARCHAR(100),
    hold_id         UUID REFERENCES holds (id),
    description     VARCHAR(255),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT check_amount_non_zero CHECK (amount <> 0),
    CONSTRAINT check_sign_of_kind CHECK ((kind IN ('top_up', 'refund')) = (amount > 0)),
    CONSTRAINT check_capture_has_hold CHECK ((kind = 'capture') = (hold_id IS NOT NULL)),
    CONSTRAINT unique_idempotency_key UNIQUE (user_id, kind, idempotency_key)
);

CREATE INDEX idx_ledger_user ON ledger_entries (user_id, id DESC);
CREATE INDEX idx_ledger_reference ON ledger_entries (user_id, reference) WHERE reference IS NOT NULL;
CREATE UNIQUE INDEX idx_ledger_hold ON ledger_entries (hold_id) WHERE hold_id IS NOT NULL;

-- A new user starts with an empty wallet; balance and held then change only from the
-- triggers below (they run at trigger depth >= 2).
CREATE FUNCTION users_guard_wallet() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.balance <> 0 OR NEW.held <> 0 THEN
            RAISE EXCEPTION 'a new user starts with an empty wallet; top it up through the ledger';
        END IF;
    ELSIF (NEW.balance <> OLD.balance OR NEW.held <> OLD.held) AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'users.balance and users.held change only through ledger_entries and holds';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_guard_wallet BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_guard_wallet();

-- Every ledger row moves the balance by its amount and records the balance after it.
CREATE FUNCTION ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET balance = balance + NEW.amount, updated_at = now()
     WHERE id = NEW.user_id
    RETURNING balance INTO NEW.balance_after;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger entry for unknown user %', NEW.user_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_apply BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_apply();

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- held = sum(amount of holds in status 'held'); a hold leaves 'held' once, never returns.
CREATE FUNCTION holds_maintain_held() RETURNS trigger LANGUAGE plpgsql AS $$
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
    RETURN NULL;
END;
$$;

CREATE TRIGGER holds_maintain_held AFTER INSERT OR UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION holds_maintain_held();
