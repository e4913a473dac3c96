"""Tokens, scopes and TLS files without a server: parsing, the constant-time check's answers,
and start-up refusals with a clear message."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from runtime.errors import PermissionDenied, Unauthenticated
from serving.app import App
from serving.grpc.auth import CONTROL, MODEL_CONTROL, OPEN, scope_of
from serving.security import AuthSettings, Scope, TlsFiles, TlsSettings, TokenTable, read_tokens_file
from serving.settings import ServerSettings, load_settings
from tests.helpers.pki import Pki, make_pki

INFER, CONTROL_TOKEN, BOTH = (secrets.token_urlsafe(24) for _ in range(3))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def table() -> TokenTable:
    return TokenTable({INFER: {Scope.INFER}, CONTROL_TOKEN: {Scope.CONTROL}, BOTH: {Scope.INFER, Scope.CONTROL}})


def test_tokens_grant_their_scopes_only():
    t = table()
    t.authorize(f"Bearer {INFER}", Scope.INFER, "ModelInfer")
    t.authorize(f"bearer   {BOTH} ", Scope.CONTROL, "RepositoryModelLoad")  # scheme case-insensitive
    with pytest.raises(PermissionDenied, match="does not grant the 'control' scope that RepositoryModelLoad needs"):
        t.authorize(f"Bearer {INFER}", Scope.CONTROL, "RepositoryModelLoad")
    with pytest.raises(PermissionDenied, match="'infer' scope"):
        t.authorize(f"Bearer {CONTROL_TOKEN}", Scope.INFER, "ModelInfer")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "ModelInfer needs a bearer token with the 'infer' scope"),
        ("Bearer ", "must be 'Bearer <token>'"),
        (f"Basic {INFER}", "must be 'Bearer <token>'"),
        ("Bearer " + "x" * 32, "invalid bearer token"),
        (f"Bearer {INFER}x", "invalid bearer token"),
    ],
)
def test_missing_malformed_or_unknown_tokens_are_unauthenticated(header, message):
    with pytest.raises(Unauthenticated, match=message) as info:
        table().authorize(header, Scope.INFER, "ModelInfer")
    assert INFER not in info.value.message


def test_a_scope_without_tokens_stays_open():
    t = TokenTable({CONTROL_TOKEN: {Scope.CONTROL}})
    assert t.protected == {Scope.CONTROL}
    t.authorize(None, Scope.INFER, "ModelInfer")
    t.authorize("Bearer nonsense-but-ignored", Scope.INFER, "ModelInfer")
    with pytest.raises(Unauthenticated):
        t.authorize(None, Scope.CONTROL, "RepositoryModelLoad")


def test_method_scopes():
    assert all(scope_of(m) is None for m in OPEN)
    assert "/inference.GRPCInferenceService/ModelReady" not in OPEN
    assert all(scope_of(m) is Scope.CONTROL for m in CONTROL) and MODEL_CONTROL <= CONTROL
    for method in ("ModelInfer", "ModelMetadata", "RepositoryIndex", "ModelStatistics", "ModelStreamInfer"):
        assert scope_of(f"/inference.GRPCInferenceService/{method}") is Scope.INFER
    assert scope_of("/attnserve.v1.Attention/Translate") is Scope.INFER
    assert scope_of("/no.such.Service/Method") is Scope.INFER  # unlisted methods are not open


def test_tokens_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "tokens"
    path.write_text(f"# operators\n{BOTH} infer,control\n\n{INFER} infer  # a client\n")
    path.chmod(0o600)
    monkeypatch.setenv("ATTNSERVE_AUTH__CONTROL_TOKEN", CONTROL_TOKEN)
    settings = load_settings(auth={"tokens_file": path})
    assert CONTROL_TOKEN not in repr(settings) and CONTROL_TOKEN not in str(settings.model_dump())
    t = TokenTable.from_settings(settings.auth)
    assert t is not None and len(t) == 3 and t.protected == {Scope.INFER, Scope.CONTROL}
    t.authorize(f"Bearer {CONTROL_TOKEN}", Scope.CONTROL, "RepositoryModelUnload")
    t.authorize(f"Bearer {BOTH}", Scope.INFER, "ModelInfer")
    assert TokenTable.from_settings(AuthSettings()) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"{INFER}\n", r":1: expected '<token> <scope>\[,<scope>\]'"),
        (f"\n{INFER} infer,admin\n", r":2: unknown scope 'admin' \(scopes: infer, control\)"),
        ("short infer\n", ":1: a token needs at least 16 characters"),
        ("tok\u00e9n-with-accents-é infer\n", ":1: a token may hold only"),
        ("# nothing\n", "holds no token"),
    ],
)
def test_bad_tokens_files_name_the_line_not_the_token(tmp_path: Path, content: str, message: str):
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_tokens_file(path)
    assert INFER not in str(info.value)


def test_a_tokens_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "tokens"
    path.write_text(f"{INFER} infer\n")
    path.chmod(0o644)
    read_tokens_file(path)
    assert "readable by other users" in caplog.text and INFER not in caplog.text


def test_env_token_is_checked_too(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ATTNSERVE_AUTH__INFER_TOKEN", "too-short")
    with pytest.raises(ValueError, match=r"auth\.infer_token: a token needs at least 16"):
        TokenTable.from_settings(load_settings().auth)


def test_model_control_mode_defaults_to_none_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch):
    assert load_settings().model_control_mode == "none"
    monkeypatch.setenv("ATTNSERVE_MODEL_CONTROL_MODE", "explicit")
    assert load_settings().model_control_mode == "explicit"
    monkeypatch.setenv("ATTNSERVE_MODEL_CONTROL_MODE", "poll")
    with pytest.raises(ValidationError, match="'none' or 'explicit'"):
        load_settings()


# --- TLS files ------------------------------------------------------------------------------


def test_tls_settings_must_be_consistent(pki: Pki):
    with pytest.raises(ValidationError, match=r"tls\.cert and tls\.key go together"):
        TlsSettings(cert=pki.server.cert)
    with pytest.raises(ValidationError, match=r"tls\.client_ca needs tls\.cert"):
        TlsSettings(client_ca=pki.ca)
    with pytest.raises(ValidationError, match=r"require_client_auth needs tls\.client_ca"):
        TlsSettings(cert=pki.server.cert, key=pki.server.key, require_client_auth=True)
    with pytest.raises(ValidationError, match=r"client_ca is used only with tls\.require_client_auth: true"):
        TlsSettings(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca)


def test_good_tls_files_load(pki: Pki):
    tls = TlsSettings(cert=pki.server.cert, key=pki.server.key, client_ca=pki.ca, require_client_auth=True)
    files = TlsFiles.load(tls)
    assert files.cert_chain.startswith(b"-----BEGIN CERTIFICATE") and files.client_ca is not None


def _app_error(tls: dict) -> str:
    """The error App raises before binding anything."""
    settings = ServerSettings(repository=Path("missing"), tls=tls, grpc={"port": 0}, metrics={"enabled": False})
    with pytest.raises(ValueError) as info:
        App(settings)
    return str(info.value)


def test_a_key_that_does_not_match_the_certificate_stops_start_up(pki: Pki):
    message = _app_error({"cert": pki.server.cert, "key": pki.client.key})
    assert message.startswith("tls.cert / tls.key") and "key values mismatch" in message


def test_missing_or_non_pem_files_stop_start_up(pki: Pki, tmp_path: Path):
    missing = tmp_path / "nope.pem"
    assert _app_error({"cert": missing, "key": pki.server.key}) == (
        f"tls.cert: cannot read {missing}: No such file or directory"
    )
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    assert _app_error({"cert": pki.server.cert, "key": junk}) == f"tls.key: {junk} is not a PEM file"
    bad_ca = {"cert": pki.server.cert, "key": pki.server.key, "client_ca": pki.server.key, "require_client_auth": True}
    message = _app_error(bad_ca)
    assert message.startswith(f"tls.client_ca ({pki.server.key}):")


def test_an_encrypted_key_stops_start_up_without_prompting(pki: Pki, tmp_path: Path):
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert "the key is encrypted" in _app_error({"cert": pki.server.cert, "key": locked})
