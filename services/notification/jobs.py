"""Background jobs of the notification service."""

from __future__ import annotations

from libs.periodic import Periodic
from services.notification.app import NotificationApp
from services.notification.delivery import DeliveryWorker


def delivery_worker(worker: DeliveryWorker, poll_interval: float) -> Periodic:
    """Sends due deliveries; wake() it after a commit that made some."""
    return Periodic("notification-delivery", worker.deliver_due, poll_interval)


def trip_forgetter(app: NotificationApp, interval: float) -> Periodic:
    """Keeps travelled_pairs to the riders who may still hear about their pairs."""
    return Periodic("notification-forget-trips", app.forget_old_trips, interval)
