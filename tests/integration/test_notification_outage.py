"""Game day: push notifications (SNS) fail for the whole test. Nothing else may notice.

This is the incident the system exists to prevent: drivers must still get new loads.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modules.notifications.replay import replay_dead_letters
from relay import demo
from shared_contracts.identity import Role
from tests.integration.conftest import wait_until

NEW_LOADS = [("L-9101", "D-1001"), ("L-9102", "D-1002"), ("L-9103", "D-1003")]
MAX_POLLS = 40


def test_sns_outage_loses_no_load_and_no_notification(api, stack):
    sns, sqs = api.aws("sns"), api.aws("sqs")
    topic_arn = stack.output("NotificationsApp", "PushTopicArn")
    dlq = stack.output("NotificationsApp", "NotificationsDeadLetterQueueUrl")
    queue = stack.output("NotificationsApp", "NotificationsQueueUrl")
    # GIVEN SNS is down: the push topic is gone, every publish fails
    sns.delete_topic(TopicArn=topic_arn)

    # WHEN dispatch assigns new loads while drivers keep polling
    statuses = []
    now = datetime.now(UTC)
    for load_id, driver in NEW_LOADS:
        command = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], now)
        r = api.http.post(
            "/dispatch/assignments",
            json=command.model_dump(mode="json"),
            headers=api.auth(Role.DISPATCH, None),
        )
        statuses.append(r.status_code)
        for d in demo.DRIVERS:
            statuses.append(api.http.get("/loads", headers=api.auth(Role.DRIVER, d)).status_code)

    # THEN no request failed, and each driver sees their new load on the next poll
    assert set(statuses) == {200, 201}
    for load_id, driver in NEW_LOADS:
        r = api.http.get(f"/loads/{load_id}", headers=api.auth(Role.DRIVER, driver))
        assert r.status_code == 200 and "relay-degraded" not in r.headers

    # AND the notifications are retried and end in the dead-letter queue
    assert wait_until(
        lambda: api.queue_depth(dlq) == len(NEW_LOADS) and api.queue_depth(queue) == 0, timeout=60
    )

    # WHEN SNS recovers and an operator replays the dead letters
    sns.create_topic(Name=topic_arn.rsplit(":", 1)[1])
    capture = api.subscribe_to_pushes()
    assert replay_dead_letters(sqs, dlq, queue) == len(NEW_LOADS)

    # THEN every notification is delivered: none lost, none twice
    pushes = api.pushes(capture, until=len(NEW_LOADS), max_polls=MAX_POLLS)
    delivered = sorted(p["data"]["load_id"] for p in pushes if p["kind"] == "load_assigned")
    assert delivered == sorted(load_id for load_id, _ in NEW_LOADS)
    assert api.queue_depth(dlq) == 0
