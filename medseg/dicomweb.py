"""DICOMweb: fetch a series from a PACS (QIDO-RS / WADO-RS) and store results back (STOW-RS).

Inputs are written ``dicomweb+http://HOST[:PORT]/PATH/studies/<StudyUID>/series/<SeriesUID>`` (or
``dicomweb+https://``); ``PATH`` is the server's DICOMweb root, e.g. ``/dicom-web`` for Orthanc.
Uses the ``dicomweb-client`` library (``pip install dicomweb-client``), with HTTP basic or bearer-token
authentication.

>>> ref = parse_url("dicomweb+http://pacs:8042/dicom-web/studies/1.2/series/1.2.3")
>>> ref.base, ref.study_uid, ref.series_uid
('http://pacs:8042/dicom-web', '1.2', '1.2.3')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError, ReadError

__all__ = ["SCHEME", "DicomWebRef", "Auth", "is_dicomweb", "parse_url", "connect", "fetch_series", "store_files"]

SCHEME = "dicomweb+"
_URL = re.compile(r"^dicomweb\+(https?://[^/?#]+(?:/[^?#]*?)?)/studies/([0-9.]+)/series/([0-9.]+)/?$")


class DicomWebError(MedsegError):
    """A DICOMweb request failed (server unreachable, refused, not found, unauthorised)."""


@dataclass(frozen=True)
class DicomWebRef:
    """A series on a DICOMweb server."""

    base: str
    study_uid: str
    series_uid: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.base}/studies/{self.study_uid}/series/{self.series_uid}"


@dataclass(frozen=True)
class Auth:
    """HTTP authentication: basic (``username`` + ``password``) or a bearer ``token``; ``ca_bundle`` for
    TLS with a private CA."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"Auth(username={self.username!r}, password={'***' if self.password else None}, token={'***' if self.token else None})"


def is_dicomweb(text: str | PathLike[str]) -> bool:
    """True for a ``dicomweb+http(s)://`` input."""
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_url(text: str) -> DicomWebRef:
    """Parse ``dicomweb+http(s)://HOST/PATH/studies/UID/series/UID``.

    Raises:
        ReadError: the text is not such a URL.
    """
    m = _URL.match(text.strip())
    if not m:
        raise ReadError(
            "not a DICOMweb series URL: expected dicomweb+http(s)://HOST/PATH/studies/<StudyUID>/series/<SeriesUID>",
            text,
        )
    return DicomWebRef(m.group(1).rstrip("/"), m.group(2), m.group(3))


def connect(base: str, auth: Auth | None = None, timeout: float = 60.0) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for ``base`` with ``auth``."""
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise MedsegError("DICOMweb needs dicomweb-client: pip install dicomweb-client") from err
    session = requests.Session()
    headers = {}
    if auth is not None:
        if auth.username is not None:
            session.auth = (auth.username, auth.password or "")
        if auth.token:
            headers["Authorization"] = f"Bearer {auth.token}"
        if auth.ca_bundle:
            session.verify = auth.ca_bundle
    return DICOMwebClient(url=base, session=session, headers=headers or None, timeout=timeout)


def _fail(what: str, ref: Any, err: Exception) -> DicomWebError:
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        code = err.response.status_code
        hint = {401: " (unauthorised: check --dicomweb-user/--dicomweb-password/--dicomweb-token)",
                403: " (forbidden)", 404: " (not found)"}.get(code, "")
        return DicomWebError(f"{what} failed: HTTP {code}{hint}", str(ref))
    return DicomWebError(f"{what} failed: {type(err).__name__}: {err}", str(ref))


def fetch_series(ref: DicomWebRef, dest: str | PathLike[str], auth: Auth | None = None) -> list[Path]:
    """Retrieve every instance of the series (WADO-RS) into the folder ``dest``; returns the files.

    Raises:
        DicomWebError: the server cannot be reached, refuses, or has no such series.
    """
    import requests

    client = connect(ref.base, auth)
    try:
        found = client.search_for_series(ref.study_uid, search_filters={"SeriesInstanceUID": ref.series_uid})
        if not found:
            raise DicomWebError("no such series on the server", str(ref))
        datasets = client.retrieve_series(ref.study_uid, ref.series_uid)
    except (requests.RequestException, OSError, ValueError) as err:
        raise _fail("DICOMweb retrieve", ref, err) from err
    out_dir = Path(dest)
    paths = []
    for n, ds in enumerate(datasets):
        path = out_dir / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    if not paths:
        raise DicomWebError("the series has no instances", str(ref))
    return paths


def store_files(base: str, files: list[str | PathLike[str]], auth: Auth | None = None) -> list[str]:
    """Send DICOM files to the server (STOW-RS); returns the stored SOP Instance UIDs.

    Raises:
        DicomWebError: the server refused an instance or cannot be reached.
    """
    import pydicom
    import requests

    client = connect(base, auth)
    datasets = [pydicom.dcmread(f) for f in files]
    try:
        resp = client.store_instances(datasets)
    except (requests.RequestException, OSError, ValueError) as err:
        raise _fail("DICOMweb store (STOW-RS)", base, err) from err
    failed = resp.get("FailedSOPSequence") if resp is not None else None
    if failed:
        raise DicomWebError(f"the server refused {len(failed)} instance(s)", base)
    return [str(ds.SOPInstanceUID) for ds in datasets]
