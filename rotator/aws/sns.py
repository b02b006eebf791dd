"""SNS through the transport: the notification channel that fans out to email, chat and queues.

Implements :class:`rotator.ports.SnsPort`. The topic must be in the rotator's region (``AWS_REGION``):
the boundary's clients are regional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rotator.aws.transport import Boundary

if TYPE_CHECKING:
    from rotator.ports import SnsPort

#: SNS caps a subject at 100 printable ASCII characters.
#: https://docs.aws.amazon.com/sns/latest/api/API_Publish.html
SUBJECT_LIMIT = 100


class SnsAdapter:
    """``sns:Publish`` over a :class:`Boundary` (counted, throttling handled, errors translated)."""

    def __init__(self, boundary: Boundary) -> None:
        self.boundary = boundary

    def publish(self, topic_arn: str, subject: str, message: str, attributes: Mapping[str, str]) -> None:
        """Publish one message; ``attributes`` become String message attributes (subscription filters).

        An attribute with an empty value is left out: SNS rejects empty String attributes.
        https://docs.aws.amazon.com/sns/latest/dg/sns-message-attributes.html
        """
        printable = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in subject)
        self.boundary.call(
            "sns",
            "Publish",
            TopicArn=topic_arn,
            Subject=printable[:SUBJECT_LIMIT],
            Message=message,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value
            },
        )


if TYPE_CHECKING:

    def _implements(adapter: SnsAdapter) -> SnsPort:
        return adapter  # mypy proves the adapter implements its port
