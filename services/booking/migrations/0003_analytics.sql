-- The seed's booking_analytics_daily materialized view (seed 000 §3.2; issue 14), read by
-- GetBookingStats (services/booking/stats.py) and refreshed hourly with REFRESH ... CONCURRENTLY
-- (its UNIQUE index is what allows that). The seed's columns are kept; differences, and why:
-- * booking_date is the clinic's local calendar date of the booking's creation (created_at
--   in clinics.time_zone), a DATE, not the seed's DATE_TRUNC('day', created_at): every `date`
--   of booking.proto is a clinic's local date, and a UTC day would put the bookings a
--   Jakarta clinic takes between 00:00 and 07:00 local time on the previous day. It is
--   still the day the booking was made (as in the seed), not the day of the visit
--   (slots.date, what ListBookings filters on).
-- * total_revenue is money kept, not the seed's SUM(final_amount) over every booking (which
--   counts unpaid, expired and fully refunded bookings as revenue): per booking, what its
--   payments took (payment_records rows other than refunds that went through: completed,
--   or refunded / partially_refunded afterwards) minus what its refunds gave back or are
--   giving back (refund rows completed or still pending: a refund owed is not revenue; a
--   refund the wallet refused for good moved no money and is not subtracted). So an unpaid
--   booking brings 0, a booking cancelled with 90 % back brings the 10 % kept, one refunded
--   in full 0, a no-show what it paid, and a move to a cheaper slot the new price. The
--   figures of a day are those of the bookings made that day: a later payment, refund or
--   cancellation changes that day's row at the next refresh.
-- * avg_booking_value is the average final_amount (price less discount) of the day's
--   bookings that were paid (whatever happened after), NULL when none was: the seed's
--   AVG(final_amount) over every booking is pulled down by reservations never paid for.
-- * Counts are of every booking made that day, whatever its status now (as in the seed).
-- If a later migration rebuilds `bookings` or `payment_records` (e.g. monthly partitioning),
-- it must drop this view first and create it again, index included: it depends on them.

CREATE MATERIALIZED VIEW booking_analytics_daily AS
WITH money AS (
    SELECT booking_id,
           bool_or(payment_method <> 'refund'
                   AND status IN ('completed', 'refunded', 'partially_refunded')) AS paid,
           COALESCE(SUM(amount) FILTER (WHERE payment_method <> 'refund'
                   AND status IN ('completed', 'refunded', 'partially_refunded')), 0) AS taken,
           COALESCE(SUM(amount) FILTER (WHERE payment_method = 'refund'
                   AND status IN ('pending', 'completed')), 0) AS given_back
      FROM payment_records
     GROUP BY booking_id
)
SELECT
    b.clinic_id,
    (b.created_at AT TIME ZONE c.time_zone)::date AS booking_date,
    b.service_id,
    COUNT(*) AS total_bookings,
    COUNT(*) FILTER (WHERE b.status = 'completed') AS completed_bookings,
    COUNT(*) FILTER (WHERE b.status = 'cancelled') AS cancelled_bookings,
    COUNT(*) FILTER (WHERE b.status = 'no_show') AS no_show_bookings,
    COALESCE(SUM(m.taken - m.given_back), 0)::NUMERIC(15,2) AS total_revenue,
    ROUND(AVG(b.final_amount) FILTER (WHERE m.paid), 2)::NUMERIC(15,2) AS avg_booking_value
FROM
    bookings b
    JOIN clinics c ON c.clinic_id = b.clinic_id
    LEFT JOIN money m ON m.booking_id = b.booking_id
GROUP BY
    b.clinic_id, (b.created_at AT TIME ZONE c.time_zone)::date, b.service_id
WITH DATA;

-- One row per clinic, local day and service: required by REFRESH ... CONCURRENTLY, and the
-- index GetBookingStats reads (a clinic's range of days).
CREATE UNIQUE INDEX booking_analytics_daily_unique_idx
ON booking_analytics_daily(clinic_id, booking_date, service_id);
