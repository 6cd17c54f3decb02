"""Bundle signatures (pipeline/package/signing.py, OpenSSF model-signing): a signed folder verifies, with our
code and with model-signing's own command line as a card prints it; each tampering is one clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aipc.pipeline.errors import ConfigError, PublishError
from aipc.pipeline.package import signing

MODEL_SIGNING = str(Path(sys.executable).parent / "model_signing")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh config home (this machine's development key is made there) and no key in the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in (signing.ENV_KEY, signing.ENV_PASSWORD, signing.ENV_CERT, signing.ENV_CHAIN):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "config"


def bundle(root: Path, name: str = "b") -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "model.bin").write_bytes(bytes(range(256)) * 64)
    (folder / "sub" / "tokenizer.json").write_text(json.dumps({"v": 1, "bundle": name}))
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.bin": {"sha256": "x"}}}))
    return folder


def signed(root: Path, name: str = "b") -> tuple[Path, Path]:
    """A signed folder, as build_bundle makes it (the public key shipped before signing); (folder, public key)."""
    folder = bundle(root, name)
    with signing.signing_key() as key:
        (folder / signing.PUBLIC_KEY).write_bytes(key.public_pem)
        signing.sign(folder, key)
    return folder, folder / signing.PUBLIC_KEY


def refused(folder: Path, public_key: Path) -> str:
    with pytest.raises(PublishError) as e:
        signing.verify(folder, public_key, where=f"bundle {folder.name}", fix="rebuild it")
    assert e.value.fix == "rebuild it"
    return str(e.value)


def test_a_signed_bundle_verifies_with_our_code_and_with_model_signings_cli(home, tmp_path):
    folder, pub = signed(tmp_path)
    key = home / "aipc" / "signing" / signing.DEV_KEY
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"  # made on first use, private
    signing.verify(folder, pub, where="b", fix="-")
    files = signing.signed_files(folder / signing.SIGNATURE)
    assert set(files) == {"model.bin", "sub/tokenizer.json", "manifest.json", signing.PUBLIC_KEY}  # not itself
    assert signing.signed_fingerprint(folder / signing.SIGNATURE) == signing.fingerprint(pub.read_bytes())
    (folder / ".gitattributes").write_text("*.bin filter=lfs\n")  # what the Hub adds: not part of the bundle
    r = subprocess.run([MODEL_SIGNING, "verify", "key", ".", "--signature", "model.sig", "--public_key",
                        signing.PUBLIC_KEY], cwd=folder, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Verification succeeded" in r.stdout + r.stderr, r.stdout + r.stderr
    # the same key signs again (no second key is made)
    again, pub2 = signed(tmp_path, "c")
    assert pub2.read_bytes() == pub.read_bytes()


def test_each_tampering_is_one_clear_message(home, tmp_path):
    folder, pub = signed(tmp_path)
    other, other_pub = signed(tmp_path, "other")

    # one flipped byte in a weight file
    data = bytearray((folder / "model.bin").read_bytes())
    data[100] ^= 1
    (folder / "model.bin").write_bytes(bytes(data))
    assert "model.bin changed after the bundle was signed" in refused(folder, pub)
    data[100] ^= 1
    (folder / "model.bin").write_bytes(bytes(data))
    signing.verify(folder, pub, "b", "-")

    # a rewritten manifest (a weight file and its sha256 changed together, say)
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.bin": {"sha256": "y"}}}))
    assert "manifest.json changed after the bundle was signed" in refused(folder, pub)
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.bin": {"sha256": "x"}}}))

    # an added and a removed file
    (folder / "extra.txt").write_text("hand-added")
    assert "files that were not signed: extra.txt" in refused(folder, pub)
    (folder / "extra.txt").unlink()
    tok = (folder / "sub" / "tokenizer.json").read_text()
    (folder / "sub" / "tokenizer.json").unlink()
    assert "signed files are missing: sub/tokenizer.json" in refused(folder, pub)
    (folder / "sub" / "tokenizer.json").write_text(tok)

    # another bundle's signature swapped in
    sig = (folder / "model.sig").read_bytes()
    (folder / "model.sig").write_bytes((other / "model.sig").read_bytes())
    assert "sub/tokenizer.json changed after the bundle was signed" in refused(folder, pub)
    (folder / "model.sig").write_bytes(sig)

    # signed by another key (verified against the publisher's key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))
        forged, _ = signed(tmp_path, "forged")
    msg = refused(forged, pub)
    assert "made with another key" in msg and signing.fingerprint(pub.read_bytes()) in msg, msg

    # a missing and a corrupt signature
    (folder / "model.sig").unlink()
    assert "no model.sig: the bundle is not signed" in refused(folder, pub)
    (folder / "model.sig").write_bytes(sig[: len(sig) // 2])
    assert "not a valid signature file" in refused(folder, pub)
    flipped = json.loads(sig)
    s = flipped["dsseEnvelope"]["signatures"][0]["sig"]
    flipped["dsseEnvelope"]["signatures"][0]["sig"] = ("A" if s[0] != "A" else "B") + s[1:]
    (folder / "model.sig").write_text(json.dumps(flipped))
    assert "the signature or the digests it signs were altered" in refused(folder, pub)
    # and model-signing's own CLI agrees (exit 1)
    r = subprocess.run([MODEL_SIGNING, "verify", "key", ".", "--signature", "model.sig", "--public_key",
                        str(pub)], cwd=folder, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr


def test_the_release_key_comes_from_the_environment_as_a_path_or_as_text(home, tmp_path, monkeypatch):
    """A CI secret holds the PEM text (or a path to it), an encrypted key takes its password from the environment,
    and a key that is not the private half of bundle.public_key is refused before anything is signed."""
    release = tmp_path / "release.priv.pem"
    public = tmp_path / "release.pub.pem"
    signing.generate_key_pair(release, public)
    for value in (str(release), release.read_text()):
        monkeypatch.setenv(signing.ENV_KEY, value)
        with signing.signing_key(public) as key:
            assert key.public_pem == public.read_bytes() and key.origin == signing.ENV_KEY
    assert not (home / "aipc").exists()  # no development key was made
    # encrypted
    from cryptography.hazmat.primitives import serialization

    pk = serialization.load_pem_private_key(release.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.BestAvailableEncryption(b"s3cret")))
    monkeypatch.setenv(signing.ENV_KEY, str(locked))
    with pytest.raises(ConfigError) as e, signing.signing_key(public):
        pass
    assert signing.ENV_PASSWORD in e.value.fix
    monkeypatch.setenv(signing.ENV_PASSWORD, "s3cret")
    folder = bundle(tmp_path, "enc")
    with signing.signing_key(public) as key:
        signing.sign(folder, key)
    signing.verify(folder, public, "enc", "-")
    # not the release key
    monkeypatch.delenv(signing.ENV_PASSWORD)
    other = tmp_path / "other.pem"
    signing.generate_key_pair(other)
    monkeypatch.setenv(signing.ENV_KEY, str(other))
    with pytest.raises(ConfigError) as e, signing.signing_key(public):
        pass
    assert "is not the private half of bundle.public_key" in str(e.value) and signing.ENV_KEY in e.value.fix
    # the release key asked for, none given
    monkeypatch.delenv(signing.ENV_KEY)
    with pytest.raises(ConfigError) as e, signing.signing_key(public):
        pass
    assert signing.ENV_KEY in str(e.value)
    # an RSA key is not what model-signing signs with
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    monkeypatch.setenv(signing.ENV_KEY, str(rsa_key))
    with pytest.raises(ConfigError) as e, signing.signing_key():
        pass
    assert "elliptic-curve" in str(e.value)


def test_a_development_key_readable_by_others_is_refused(home, tmp_path):
    signed(tmp_path)
    key = home / "aipc" / "signing" / signing.DEV_KEY
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError) as e, signing.signing_key():
        pass
    assert "chmod 600" in e.value.fix


def test_binding_checks_files_against_what_dvc_lock_records(tmp_path, monkeypatch):
    """pipeline/package/binding.py: the record of a folder DVC built (stage, .dir hash, each file's md5), and a
    file whose bytes differ from it named with the stage and the record."""
    import shutil
    import textwrap

    from aipc.pipeline.package import binding

    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "make.py").write_text(textwrap.dedent("""
        import os
        os.makedirs("artifacts/openvino/int4/sub", exist_ok=True)
        open("artifacts/openvino/int4/model.bin", "wb").write(bytes(range(256)) * 8)
        open("artifacts/openvino/int4/sub/config.json", "w").write('{"a": 1}')
    """))
    (ws / "dvc.yaml").write_text("stages:\n  export-openvino:\n    foreach: [int4]\n    do:\n      cmd: python make.py\n"
                                 "      deps: [make.py]\n      outs:\n        - artifacts/openvino/${item}\n")
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["init", "--no-scm", "-q"], ["repro", "-q"]):
        r = subprocess.run([dvc, *args], cwd=ws, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    art = ws / "artifacts/openvino/int4"
    rec = binding.dvc_record(ws, art)
    assert rec["stage"] == "export-openvino@int4" and rec["out"] == "artifacts/openvino/int4"
    assert rec["md5"].endswith(".dir") and set(rec["files"]) == {"model.bin", "sub/config.json"}
    assert rec["files"]["model.bin"] == binding.md5_file(art / "model.bin")
    copy = tmp_path / "bundle"
    shutil.copytree(art, copy)
    (copy / "README.md").write_text("not from the artifact: not checked")
    binding.check(copy, rec, "bundle", "rebuild")
    (copy / "sub" / "config.json").write_text('{"a": 2}')
    with pytest.raises(PublishError) as e:
        binding.check(copy, rec, "bundle", "rebuild")
    assert "sub/config.json differ(s) from what dvc.lock records for stage export-openvino@int4" in str(e.value)
    assert rec["md5"] in str(e.value)
    assert binding.dvc_record(ws, ws / "artifacts") is None  # not an output of its own
    assert binding.dvc_record(tmp_path, art) is None  # no dvc.lock there
