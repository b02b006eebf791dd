"""Per-user policy: the configured defaults, overridden by the user's ``rotator:*`` tags. Pure.

A malformed tag value raises :class:`~rotator.errors.UserError`, which stops that user only. That includes
a ``rotator:exclude`` that is neither true nor false: such a user stays managed (so it is seen and
reported) but is not touched.
"""

from __future__ import annotations

from collections.abc import Mapping

from rotator.durations import parse_duration
from rotator.errors import UserError
from rotator.model import (
    USER_TAG_EXCLUDE,
    USER_TAG_GRACE_PERIOD,
    USER_TAG_MAX_KEY_AGE,
    USER_TAG_RETENTION,
    EffectivePolicy,
    PolicyDefaults,
)

_OVERRIDES = (
    (USER_TAG_MAX_KEY_AGE, "max_key_age"),
    (USER_TAG_GRACE_PERIOD, "grace_period"),
    (USER_TAG_RETENTION, "retention"),
)


def tag_lookup(tags: Mapping[str, str]) -> dict[str, str]:
    # IAM tag keys are case-insensitive for uniqueness, so match them that way.
    return {key.lower(): value for key, value in tags.items()}


def resolve_policy(defaults: PolicyDefaults, user_tags: Mapping[str, str], user: str) -> EffectivePolicy:
    """The policy for ``user`` after its ``rotator:max-key-age``/``grace-period``/``retention`` tags."""
    tags = tag_lookup(user_tags)
    exclude = tags.get(USER_TAG_EXCLUDE)
    if exclude is not None and exclude_value(exclude) is None:
        raise UserError(user, f"tag {USER_TAG_EXCLUDE}={_shorten(exclude)!r}: must be true or false")
    durations = {
        "max_key_age": defaults.max_key_age,
        "grace_period": defaults.grace_period,
        "retention": defaults.retention,
    }
    for tag, name in _OVERRIDES:
        raw = tags.get(tag)
        if raw is None:
            continue
        try:
            durations[name] = parse_duration(raw)
        except ValueError as exc:
            raise UserError(user, f"tag {tag}={_shorten(raw)!r}: {exc}") from exc
    return EffectivePolicy(
        max_key_age=durations["max_key_age"],
        grace_period=durations["grace_period"],
        retention=durations["retention"],
        disable_guard=defaults.disable_guard,
        quiet_period=defaults.quiet_period,
        max_hold=defaults.max_hold,
        validation_timeout=defaults.validation_timeout,
        quarantine=defaults.quarantine,
    )


def exclude_value(raw: str) -> bool | None:
    """``rotator:exclude`` as a boolean: ``true``/``false`` in any case; None for any other value."""
    return {"true": True, "false": False}.get(raw.strip().lower())


def is_excluded_by_tag(tags: Mapping[str, str]) -> bool:
    """``rotator:exclude=true`` (any case) opts a user out of management.

    Any value but true or false keeps the user managed: :func:`resolve_policy` then reports it as that
    user's problem, so a typo such as ``yes`` neither rotates the user nor hides it.
    """
    return exclude_value(tag_lookup(tags).get(USER_TAG_EXCLUDE, "")) is True


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
