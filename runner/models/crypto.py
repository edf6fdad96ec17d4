"""Encryption at rest for provider API keys (Fernet), keyed from FIELD_ENCRYPTION_KEYS.

The first key of settings.FIELD_ENCRYPTION_KEYS encrypts; every key decrypts, then,
last, the key derived from SECRET_KEY (and SECRET_KEY_FALLBACKS) that encrypted API
keys before FIELD_ENCRYPTION_KEY existed, so stored keys stay readable. `rotate()`
re-encrypts a token with the first key (`manage.py rotatekeys` does every provider).
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _derive(secret):
    return Fernet(
        base64.urlsafe_b64encode(hashlib.sha256(("api-keys:" + secret).encode()).digest())
    )


def _secrets():
    secrets = list(settings.FIELD_ENCRYPTION_KEYS)
    for legacy in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]:
        if legacy and legacy not in secrets:
            secrets.append(legacy)
    return secrets


def _fernet():
    return MultiFernet([_derive(s) for s in _secrets()])


def encrypt(text):
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token):
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "the stored API key cannot be decrypted with any key of FIELD_ENCRYPTION_KEY "
            "(or the SECRET_KEY it was saved under); enter the key again"
        ) from None


def rotate(token):
    """The token re-encrypted with the first key."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise ValueError("the stored API key cannot be decrypted; enter the key again") from None
