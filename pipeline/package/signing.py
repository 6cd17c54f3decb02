"""Bundle signatures with OpenSSF model-signing: who built a bundle, and that nothing changed since.

Every bundle carries ``model.sig``: a Sigstore bundle (DSSE envelope over an in-toto statement) that
lists the sha256 of every other file of the bundle (manifest.json and the card included), signed with
an elliptic-curve key (P-256/384/521, PEM). The key:

- ``AIPC_SIGNING_KEY``: the private key, as a path or as the PEM text itself (a CI secret);
  ``AIPC_SIGNING_KEY_PASSWORD`` if it is encrypted. With ``AIPC_SIGNING_CERT`` (the signing certificate,
  path or PEM) and optionally ``AIPC_SIGNING_CERT_CHAIN`` the bundle is signed with the certificate.
- otherwise this machine's development key, made on first use under ``$XDG_CONFIG_HOME/aipc/signing/``
  (``~/.config/aipc/signing/``, mode 0600): bundles built anywhere are signed, a release is signed with
  the release key (``bundle.public_key`` in params.yaml says which; a build with another key is
  refused).

The bundle also ships ``signing-key.pub.pem``, the public key it was signed with; the manifest records its
fingerprint (sha256 of the PEM, what model-signing records as the key hint). Trust comes from comparing
that key with the one the publisher announces, never from the copy inside the bundle. Any consumer checks
a bundle with model-signing's own CLI, nothing of this project::

    model_signing verify key . --signature model.sig --public_key signing-key.pub.pem

Every call into model_signing lives here (its exceptions are six unrelated types: any of them means
"not verified", and is turned into one PublishError naming the file and the fix).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, PublishError

log = logging.getLogger(__name__)

SIGNATURE = "model.sig"
PUBLIC_KEY = "signing-key.pub.pem"
ENV_KEY = "AIPC_SIGNING_KEY"
ENV_PASSWORD = "AIPC_SIGNING_KEY_PASSWORD"
ENV_CERT = "AIPC_SIGNING_CERT"
ENV_CHAIN = "AIPC_SIGNING_CERT_CHAIN"
DEV_KEY = "dev.priv.pem"


# what a consumer installs to check a bundle (model-signing imports OpenSSL without declaring pyOpenSSL)
TOOLS = ("model-signing", "pyopenssl")


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in TOOLS}


def fingerprint(public_pem: bytes) -> str:
    """sha256 of the public key's PEM bytes: model-signing's key hint, and what the manifest records."""
    return "sha256:" + hashlib.sha256(public_pem).hexdigest()


def dev_key_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aipc" / "signing"


@dataclass(frozen=True)
class SigningKey:
    private_key: Path  # a PEM file (a temporary one when the key came as text)
    public_pem: bytes
    origin: str  # where it came from, for messages (never the key itself)
    password: bytes | None = None
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_pem)


def public_pem_of(private_key: Path, password: bytes | None, origin: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=password)
    except (ValueError, TypeError) as err:
        hint = f"set {ENV_PASSWORD}" if "encrypted" in str(err) else "give a PEM private key (EC P-256, P-384 or P-521)"
        raise ConfigError(f"{origin}: not a usable private key ({err})", fix=hint) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ConfigError(f"{origin}: model-signing signs with an elliptic-curve key (P-256, P-384 or P-521), "
                          f"this is {type(key).__name__.replace('_', '')}",
                          fix="make one: openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt")
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_key_pair(private_path: Path, public_path: Path | None = None) -> bytes:
    """A new P-256 key: the private key written 0600 (never over an existing file); returns the public PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if public_path is not None:
        public_path.write_bytes(public)
    return public


@contextlib.contextmanager
def _pem_file(value: str, what: str) -> Iterator[Path]:
    """A path given as is, or PEM text (a CI secret) in a private temporary file."""
    if value.lstrip().startswith("-----BEGIN"):
        fd, name = tempfile.mkstemp(prefix="aipc-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value.strip() + "\n")
            yield Path(name)
        finally:
            os.unlink(name)
        return
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}: {path}: no such file", fix=f"set {what} to a PEM file's path or to the PEM text")
    yield path


@contextlib.contextmanager
def signing_key(expected_public_key: Path | None = None) -> Iterator[SigningKey]:
    """The key bundles are signed with (see the module docstring); ``expected_public_key`` (params.yaml
    bundle.public_key) must be its public half."""
    with contextlib.ExitStack() as stack:
        secret = os.environ.get(ENV_KEY)
        password = os.environ.get(ENV_PASSWORD)
        pw = password.encode() if password else None
        cert = chain = None
        if secret:
            origin = ENV_KEY
            private = stack.enter_context(_pem_file(secret, ENV_KEY))
            if os.environ.get(ENV_CERT):
                cert = stack.enter_context(_pem_file(os.environ[ENV_CERT], ENV_CERT))
            if os.environ.get(ENV_CHAIN):
                chain = stack.enter_context(_pem_file(os.environ[ENV_CHAIN], ENV_CHAIN))
        elif expected_public_key is not None:
            raise ConfigError(f"params.yaml: bundle.public_key = {expected_public_key} asks for the release key, "
                              f"but {ENV_KEY} is not set",
                              fix=f"set {ENV_KEY} to its private key (a path, or the PEM text from a CI secret); for a "
                                  "local build, remove bundle.public_key to sign with this machine's key")
        else:
            private = dev_key_dir() / DEV_KEY
            origin = f"this machine's development key {private}"
            if not private.is_file():
                generate_key_pair(private)
                log.info("signing: made a development key %s (bundles built here are signed with it)", private)
            mode = stat.S_IMODE(private.stat().st_mode)
            if mode & 0o077:
                raise ConfigError(f"{private}: readable by others (mode {mode:o})", fix=f"chmod 600 {private}")
        public = public_pem_of(private, pw, origin)
        if expected_public_key is not None:
            want = Path(expected_public_key).read_bytes() if Path(expected_public_key).is_file() else None
            if want is None:
                raise ConfigError(f"params.yaml: bundle.public_key: {expected_public_key}: no such file",
                                  fix="commit the release's public key there (PEM), or remove the setting")
            if _normalized(want) != _normalized(public):
                raise ConfigError(f"{origin} is not the private half of bundle.public_key "
                                  f"({expected_public_key}, {fingerprint(want)}); it is {fingerprint(public)}",
                                  fix=f"set {ENV_KEY} to the release key, or point bundle.public_key at this "
                                      "key's public half")
        yield SigningKey(private, public, origin, pw, cert, tuple([chain]) if chain else ())


def _normalized(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(pem)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hashing(allow_symlinks: bool = False):
    from model_signing import hashing

    # model.sig cannot sign itself; .git* files (a Hub repo's .gitattributes) are left out by model-signing.
    # A bundle holds files (hard links at most); a Hub cache snapshot holds symlinks to its blobs, which
    # verifying follows (each file is hashed under its own name, so a link changes nothing it checks).
    return (hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True)
            .set_allow_symlinks(allow_symlinks))


def sign(folder: Path, key: SigningKey) -> Path:
    """Write ``folder/model.sig`` over every other file of ``folder``."""
    from model_signing import signing

    config = signing.Config()
    if key.certificate is not None:
        config = config.use_certificate_signer(private_key=key.private_key, signing_certificate=key.certificate,
                                               certificate_chain=key.chain)
    else:
        # bytes: model-signing 1.1.1 types the password as str but hands it to cryptography, which wants bytes
        config = config.use_elliptic_key_signer(private_key=key.private_key, password=key.password)
    out = Path(folder) / SIGNATURE
    config.set_hashing_config(_hashing()).sign(Path(folder), out)
    return out


def verify(folder: Path, public_key: Path, where: str, fix: str) -> str:
    """Check ``folder/model.sig`` against ``public_key`` (a PEM file) and every file's sha256; one
    PublishError naming what differs otherwise. Returns the key's fingerprint (of its canonical PEM, as the
    manifest records it, whatever the file's own formatting)."""
    from model_signing import verifying

    folder = Path(folder)
    sig = folder / SIGNATURE
    if not sig.is_file():
        raise PublishError(f"{where}: no {SIGNATURE}: the bundle is not signed", fix=fix)
    try:
        want = fingerprint(_normalized(Path(public_key).read_bytes()))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{public_key}: not a readable PEM public key ({err})",
                          fix="give the publisher's public key (PEM, SubjectPublicKeyInfo)") from None
    try:
        (verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
         .set_hashing_config(_hashing(allow_symlinks=True)).verify(folder, sig))
    except Exception as err:  # noqa: BLE001 - model-signing raises six unrelated types; any of them = not verified
        raise PublishError(f"{where}: {describe_failure(err, sig, want)}", fix=fix) from None
    return want


def describe_failure(err: BaseException, sig: Path, want: str) -> str:
    """model-signing's failure as one sentence (its messages, matched here and nowhere else)."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if "Key mismatch" in text:
        got = signed_fingerprint(sig)
        return f"{SIGNATURE} was made with another key ({got or 'unknown'}), not {want}"
    import re

    changed = re.findall(r"Hash mismatch for \\*'([^'\\]+)", text)
    if changed:
        return (f"{', '.join(sorted(set(changed)))} changed after the bundle was signed (sha256 not the signed "
                "one)")
    for pattern, say in ((r"Extra files found in model [^:]*:\s*([^'\]\"\\]+)", "files that were not signed: {}"),
                         (r"Missing files in model [^:]*:\s*([^'\]\"\\]+)", "signed files are missing: {}")):
        m = re.search(pattern, text)
        if m:
            return say.format(m.group(1).strip())
    if type(err).__name__ in ("JSONDecodeError", "UnicodeDecodeError", "KeyError", "DecodeError"):
        return f"{SIGNATURE} is not a valid signature file ({type(err).__name__}: {first})"
    if type(err).__name__ == "InvalidSignature":
        return f"{SIGNATURE} does not verify: the signature or the digests it signs were altered"
    return f"{SIGNATURE} does not verify ({type(err).__name__}: {first})"


def signed_fingerprint(sig: Path) -> str | None:
    """The key hint a signature carries (sha256 of the signer's public key PEM), if readable."""
    import json

    try:
        hint = json.loads(sig.read_text())["verificationMaterial"]["publicKey"]["hint"]
    except Exception:  # noqa: BLE001 - an unreadable signature has no hint
        return None
    return f"sha256:{hint}" if hint and not str(hint).startswith("sha256:") else hint


def signed_files(sig: Path) -> dict[str, str]:
    """{file: sha256} as the signature's payload lists them (what a consumer's verify will check)."""
    import base64
    import json

    env = json.loads(sig.read_text())["dsseEnvelope"]
    statement = json.loads(base64.b64decode(env["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
