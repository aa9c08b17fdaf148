-- money_json(amount): the protobuf JSON of google.type.Money for an IDR amount, exactly as
-- json_format.MessageToDict(libs.money.to_money(amount)) renders it: units a JSON string,
-- nanos a number, both with the sign of the amount, zero fields left out. A statement that
-- writes an event built in Python puts an amount only it knows into it (PlaceHold's
-- availableAfter, services/user/store.py). For amounts with at most two decimals, as
-- NUMERIC(15,2) arithmetic gives. Not STRICT, so the planner inlines it.
CREATE FUNCTION money_json(amount NUMERIC) RETURNS JSONB
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'currencyCode', 'IDR',
        'units', nullif(trunc(amount), 0)::bigint::text,
        'nanos', nullif((trunc(amount * 100) - trunc(amount) * 100)::int * 10000000, 0)));
