"""boto3 sessions: the environment's, an assumed role's (refreshed before it expires), and the
sandbox's plain clients. The composition root (``App``, ``Aws.assume``) builds them; a :class:`Boundary`
then makes every call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.loaders
import botocore.session

_LOADER: list[botocore.loaders.Loader] = []
_LOADER_LOCK = threading.Lock()


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore model loader (and its cache) for the sessions of every assumed account."""
    with _LOADER_LOCK:
        if not _LOADER:
            _LOADER.append(botocore.session.Session().get_component("data_loader"))  # honours AWS_DATA_PATH
        return _LOADER[0]


class _Given(botocore.credentials.CredentialProvider):
    """A credential provider that hands out credentials we already hold (refreshable ones)."""

    METHOD = "sts-assume-role"

    def __init__(self, credentials: botocore.credentials.Credentials) -> None:
        super().__init__()
        self._given = credentials

    def load(self) -> botocore.credentials.Credentials:
        return self._given


def session_from_environment() -> boto3.session.Session:
    """boto3's standard chain: env, profiles, instance/container roles; AWS_ENDPOINT_URL too.

    botocore reads ``AWS_DEFAULT_REGION`` but not ``AWS_REGION`` (which the other SDKs and the
    container runtimes set), so ``AWS_REGION`` fills the gap when nothing else named a region.
    """
    session = boto3.session.Session()
    if session.region_name is None and os.environ.get("AWS_REGION"):
        session = boto3.session.Session(region_name=os.environ["AWS_REGION"])
    return session


def static_session(*, region: str, key_id: str, secret: str) -> boto3.session.Session:
    """A session with fixed credentials and region, whatever the environment says (``rotator sandbox``)."""
    return boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region)


def now_utc() -> datetime:
    """The real clock, for the composition root only (the core takes ``now`` as an argument)."""
    return datetime.now(UTC)


def refreshable_session(fetch: Callable[[], dict[str, str]], region: str | None) -> boto3.session.Session:
    """A session whose temporary credentials ``fetch`` returns (``access_key``, ``secret_key``, ``token``,
    ``expiry_time``): the first now, later ones before they expire (a daemon outlives their hour).
    """
    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = botocore.session.Session()
    core.register_component("data_loader", _shared_loader())  # parse the API models once per process
    core.register_component("credential_provider", botocore.credentials.CredentialResolver([_Given(credentials)]))
    return boto3.session.Session(botocore_session=core, region_name=region)


def static_client(service: str, *, endpoint_url: str, region: str, key_id: str, secret: str) -> Any:
    """A plain boto3 client with fixed credentials, outside any :class:`Boundary`: for ``rotator sandbox``,
    which seeds and exercises its own embedded emulator (never the rotator's calls).
    """
    return boto3.client(
        service,  # type: ignore[call-overload]  # one code path for every service name
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
