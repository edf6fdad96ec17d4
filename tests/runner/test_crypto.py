"""API keys are encrypted with FIELD_ENCRYPTION_KEY (a list: the first encrypts, all decrypt),
not with a key derived from SECRET_KEY; keys stored before it stay readable."""

import base64
import hashlib
import io
import os
import stat

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from config.settings import _field_encryption_keys
from runner.models import Provider

pytestmark = pytest.mark.django_db


def provider(owner, key="sk-secret-1234"):
    p = Provider(owner=owner, name="p", base_url="http://127.0.0.1:9/v1")
    p.set_api_key(key)
    p.save()
    return Provider.objects.get(pk=p.pk)


def old_token(secret_key, text):
    """How API keys were encrypted before FIELD_ENCRYPTION_KEY: keyed from SECRET_KEY."""
    key = base64.urlsafe_b64encode(hashlib.sha256(("api-keys:" + secret_key).encode()).digest())
    return Fernet(key).encrypt(text.encode()).decode()


def test_the_first_key_encrypts_and_every_key_decrypts(owner, settings):
    settings.FIELD_ENCRYPTION_KEYS = ["old-key"]
    stored = provider(owner)
    settings.FIELD_ENCRYPTION_KEYS = ["new-key", "old-key"]  # rotation: a new key first
    assert stored.api_key == "sk-secret-1234"
    Provider.objects.all().delete()
    fresh = provider(owner, "sk-fresh-5678")
    settings.FIELD_ENCRYPTION_KEYS = ["new-key"]
    assert fresh.api_key == "sk-fresh-5678"  # made with the new key
    settings.FIELD_ENCRYPTION_KEYS = ["old-key"]
    with pytest.raises(ValueError, match="cannot be decrypted"):
        fresh.api_key  # noqa: B018


def test_the_key_does_not_depend_on_secret_key(owner, settings):
    settings.FIELD_ENCRYPTION_KEYS = ["field-key"]
    stored = provider(owner)
    settings.SECRET_KEY = "a-rotated-secret-key-" + "x" * 40
    assert stored.api_key == "sk-secret-1234"


def test_keys_stored_before_field_encryption_key_stay_readable(owner, settings):
    settings.FIELD_ENCRYPTION_KEYS = ["field-key"]
    p = provider(owner)
    Provider.objects.filter(pk=p.pk).update(
        api_key_encrypted=old_token(settings.SECRET_KEY, "sk-from-before")
    )
    assert Provider.objects.get(pk=p.pk).api_key == "sk-from-before"
    # and after SECRET_KEY itself is rotated, with the old one in SECRET_KEY_FALLBACKS
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-rotated-secret-key-" + "x" * 40
    assert Provider.objects.get(pk=p.pk).api_key == "sk-from-before"


def test_rotatekeys_re_encrypts_every_key_with_the_first(owner, settings):
    settings.FIELD_ENCRYPTION_KEYS = ["old-key"]
    p = provider(owner)
    settings.FIELD_ENCRYPTION_KEYS = ["new-key", "old-key"]
    err = io.StringIO()
    call_command("rotatekeys", stderr=err)
    assert "Re-encrypted 1 API key(s)" in err.getvalue()
    settings.FIELD_ENCRYPTION_KEYS = ["new-key"]  # the old key can go now
    assert Provider.objects.get(pk=p.pk).api_key == "sk-secret-1234"


def test_the_embedded_default_is_a_key_file_of_its_own(tmp_path, monkeypatch):
    for name in ("FIELD_ENCRYPTION_KEY", "SECRET_KEY", "FIELD_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    keys = _field_encryption_keys()
    path = tmp_path / "config" / "pipeline-designer" / "field-encryption-key"
    assert path.exists() and keys == [path.read_text().strip()] and len(keys[0]) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _field_encryption_keys() == keys  # the same key next time
    monkeypatch.setenv("FIELD_ENCRYPTION_KEY", "k2, k1")
    assert _field_encryption_keys() == ["k2", "k1"]
    # a deployment that sets SECRET_KEY only keeps encrypting as before (no key file)
    monkeypatch.delenv("FIELD_ENCRYPTION_KEY")
    monkeypatch.setenv("SECRET_KEY", "deployed")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "elsewhere"))
    assert _field_encryption_keys() == []
    assert not (tmp_path / "elsewhere").exists()
