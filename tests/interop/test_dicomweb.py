"""DICOMweb against a real Orthanc with its DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``):
upload a real CT series, segment it through DICOMweb, store the SEG with STOW-RS, read it back, compare."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import medseg.io
from medseg.cli import main
from medseg.io.dicom_seg import read_seg
from tests.interop._util import DCMQI, tiny_model

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
USER, PASSWORD = "medseg", "s3cret-test"


def _plugin() -> Path | None:
    for d in PLUGIN_DIRS:
        for p in sorted(Path(d).glob("libOrthancDicomWeb.so*")) if Path(d).is_dir() else []:
            return p
    return None


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """Orthanc on 127.0.0.1 and a free port, temporary storage, basic auth; yields its base URL."""
    exe = shutil.which("Orthanc")
    plugin = _plugin()
    if exe is None or plugin is None:
        pytest.skip("Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb; "
                    "scripts/setup.sh --dev does it as root)")
    import requests

    root = tmp_path_factory.mktemp("orthanc")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {
        "Name": "medseg-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "WebDavEnabled": False,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([exe, str(root / "orthanc.json")], stdout=subprocess.DEVNULL,
                            stderr=open(root / "orthanc.log", "wb"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_segment_from_pacs_and_store_seg_back(orthanc: str, shared_data: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom
    import requests

    from medseg.dicomweb import Auth, connect

    ct_dir = shared_data / DCMQI / "ct-3slice"
    if not ct_dir.exists():
        pytest.skip("dcmqi data not in ../shared/data")
    for f in sorted(ct_dir.iterdir()):  # upload through Orthanc's own REST API (not medseg's code)
        r = requests.post(f"{orthanc}/instances", data=f.read_bytes(), auth=(USER, PASSWORD), timeout=30)
        assert r.ok, r.text
    first = pydicom.dcmread(sorted(ct_dir.iterdir())[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}/series/{series}"
    model = tiny_model(tmp_path)
    out = tmp_path / "web.nii.gz"

    # wrong credentials: one clear line, nothing written
    code = main(["segment", url, "-o", str(out), "--model", str(model), "--device", "cpu",
                 "--dicomweb-user", USER, "--dicomweb-password", "wrong"])
    assert code == 2 and "HTTP 401" in capsys.readouterr().err
    assert not out.exists()

    monkeypatch.setenv("MEDSEG_DICOMWEB_PASSWORD", PASSWORD)
    code = main(["segment", url, "-o", str(out), "--model", str(model), "--device", "cpu",
                 "--dicomweb-user", USER, "--store"])
    assert code == 0
    assert "stored 1 object(s)" in capsys.readouterr().out
    local = medseg.io.read(out)
    # the SEG on the server, found by QIDO-RS in the study and retrieved by WADO-RS
    client = connect(f"{orthanc}/dicom-web", Auth(USER, PASSWORD))
    segs = client.search_for_series(study, search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_uid = segs[0]["0020000E"]["Value"][0]
    [ds] = client.retrieve_series(study, seg_uid)
    ds.save_as(tmp_path / "from_pacs.dcm", enforce_file_format=True)
    back = read_seg(tmp_path / "from_pacs.dcm", reference=ct_dir)
    np.testing.assert_array_equal(back.array, local.array)
    assert back.geometry.allclose(medseg.io.read(ct_dir).geometry)
    with open(out.with_name("web.seg.dcm"), "rb") as f:
        assert pydicom.dcmread(f).SOPInstanceUID == ds.SOPInstanceUID
