"""HTTPS for the HTTP server: --tls-cert-path / --tls-key-path (Dynamo's names) turned into an ssl.SSLContext."""

from __future__ import annotations

import ssl
from typing import NoReturn

from dynamo_mono.config import ConfigError, Option, Settings
from dynamo_mono.options import TLS_CERT_PATH, TLS_KEY_PATH


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's SSLContext, or None without TLS options; ConfigError for a half or unusable configuration."""
    cert, key = settings.tls_cert_path, settings.tls_key_path
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (TLS_CERT_PATH, TLS_KEY_PATH) if key is None else (TLS_KEY_PATH, TLS_CERT_PATH)
        raise ConfigError(f"{_where(settings, given)} needs {_where(settings, missing)} as well: TLS takes a "
                          "certificate and its private key together (or neither)")
    for opt, path in ((TLS_CERT_PATH, cert), (TLS_KEY_PATH, key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"invalid {_where(settings, opt)}={path!r}: cannot read it "
                              f"({exc.strerror or type(exc).__name__})") from None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        # A passphrase-protected key would make OpenSSL prompt on the terminal: refuse it instead.
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _Passphrase:
        reason = "the private key is passphrase-protected (use an unencrypted key)"
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
    else:
        return ctx
    raise ConfigError(f"invalid {_where(settings, TLS_CERT_PATH)}={cert!r} / "
                      f"{_where(settings, TLS_KEY_PATH)}={key!r}: {reason}")


class _Passphrase(Exception):
    pass


def _no_passphrase() -> NoReturn:
    raise _Passphrase()


def _where(settings: Settings, opt: Option) -> str:
    """How the user set an option: its env var when it came from there, else its flag."""
    return opt.env_var if settings.source(opt.name) == "env" else opt.flag
