-- The effects of the test handlers. No unique key on purpose: a double effect must show.
CREATE TABLE effects (
    id       BIGSERIAL PRIMARY KEY,
    consumer TEXT NOT NULL,
    event_id UUID NOT NULL,
    user_id  TEXT NOT NULL
);
