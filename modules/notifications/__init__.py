"""Notifications (optional, internal): an SQS worker that publishes push notifications to SNS.

Producers (loads, message) only enqueue a :class:`shared_contracts.notifications.Notification`;
nothing waits on this module. Failed deliveries retry with backoff and dead-letter after
``MaxReceiveCount`` receives, where an operator can inspect and replay them (``replay.py``).
"""
