"""Notifications end to end: a real sweep against moto, delivered to SNS (an SQS queue subscribed to the topic,
read back) and to webhooks served on 127.0.0.1 - one that answers, one that fails, one that hangs.

A hanging or failing webhook never stalls or fails a sweep: the sweep returns while the request is still
held open, the delivery counts as a failure (``rotator_notifications_total``) and the log says so.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import AwsEnv, assert_no_secrets

from rotator.app import App
from rotator.config import load_settings
from rotator.events import Event, EventBus, NotificationSent

USER = "svc-notified"
OWNER = "payments-team@example.com"


class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with ``status``, or holding them until released."""

    def __init__(self, status: int = 200, *, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.held = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                if hang:
                    receiver.held += 1
                    receiver.release.wait(30)
                receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


def settings_file(tmp_path: Path, notifications: str) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(
        "policy: {max_key_age: 1h, grace_period: 1h, retention: 1h}\n"
        "aws: {validation_timeout: 10s, max_calls_per_second: 1000}\n"
        f"notifications: {notifications}\n"
    )
    return path


def sweep(path: Path, events: list[Event]) -> App:
    app = App(load_settings(str(path)), bus=EventBus([events.append]), log=False)
    report = app.sweep()
    assert report.failed == 0, [o.failed for o in report.outcomes if o.failed] + report.errors
    return app


def test_sns_delivers_to_a_subscribed_queue_with_the_owner_attribute(
    aws: AwsEnv, moto_environ: None, tmp_path: Path
) -> None:
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name="rotator")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="owners")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    aws.user(USER, tags={"owner": OWNER})
    events: list[Event] = []
    app = sweep(settings_file(tmp_path, "{sns_topic_arn: " + topic + "}"), events)
    assert app.notifier is not None
    assert app.notifier.flush(10)

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    envelopes = [json.loads(m["Body"]) for m in messages]
    [published] = [e for e in envelopes if json.loads(e["Message"])["kind"] == "rotation.published"]
    body = json.loads(published["Message"])
    assert body["user"] == USER
    assert body["owner"] == OWNER
    assert body["new_key_id"] == aws.secret(USER)["AccessKeyId"]
    assert published["Subject"] == f"iam-key-rotator: rotation.published for {USER}"
    assert published["MessageAttributes"]["owner"]["Value"] == OWNER
    # Also the warning: the bootstrapped key's disable falls due within warn_before (grace 1h < 3d).
    kinds = sorted(json.loads(e["Message"])["kind"] for e in envelopes)
    assert kinds == ["key.disable_warning", "rotation.published"]
    sent = [e for e in events if isinstance(e, NotificationSent)]
    assert [(e.channel, e.result) for e in sent] == [("sns", "success")] * 2
    assert app.registry.get_sample_value("rotator_notifications_total", {"channel": "sns", "result": "success"}) == 2
    assert_no_secrets([json.dumps(envelopes)], aws.created_secrets)


def test_webhooks_that_answer_fail_or_hang_never_stall_or_fail_the_sweep(
    aws: AwsEnv, moto_environ: None, tmp_path: Path, receivers: list[Receiver]
) -> None:
    good, failing, hanging = Receiver(), Receiver(500), Receiver(hang=True)
    receivers += [good, failing, hanging]
    aws.user(USER, tags={"owner": OWNER})

    events: list[Event] = []
    app = sweep(settings_file(tmp_path, "{webhook_url: '" + good.url + "'}"), events)
    assert app.notifier is not None
    assert app.notifier.flush(10)
    [body, warning] = good.bodies
    assert body["kind"] == "rotation.published"
    assert warning["kind"] == "key.disable_warning"
    assert body["text"].startswith("A new access key was published.")  # Slack's incoming-webhook field
    assert body["owner"] == OWNER
    assert_no_secrets([json.dumps(good.bodies)], aws.created_secrets)

    # A failing webhook: counted and logged as a failure, the sweep (a bootstrap of a second user) succeeds.
    aws.user("svc-second")
    events.clear()
    app = sweep(settings_file(tmp_path, "{webhook_url: '" + failing.url + "'}"), events)
    assert app.notifier is not None
    assert app.notifier.flush(10)
    # (A new process knows nothing of the warnings the last one sent: svc-notified's comes again.)
    outcomes = {(e.name, e.channel, e.result) for e in events if isinstance(e, NotificationSent)}
    assert outcomes == {("notification.failed", "webhook", "failure")}
    assert ("svc-second", "rotation.published") in {(b["user"], b["kind"]) for b in failing.bodies}

    # A hanging webhook: the sweep returns while the request is still held open; the delivery times out.
    aws.user("svc-third")
    events.clear()
    app = sweep(settings_file(tmp_path, "{webhook_url: '" + hanging.url + "', timeout: 1s}"), events)
    assert hanging.held >= 1, "the sweep returned before the webhook answered"
    assert not hanging.bodies
    assert app.notifier is not None
    assert app.notifier.flush(10)
    failed = [e for e in events if isinstance(e, NotificationSent)]
    assert failed
    assert {(e.channel, e.result, e.error_type) for e in failed} == {("webhook", "failure", "TimeoutError")}
    total = app.registry.get_sample_value("rotator_notifications_total", {"channel": "webhook", "result": "failure"})
    assert total == len(failed)
