"""HTTPS with --tls-cert-path / --tls-key-path: the openai SDK talks to it, plain HTTP does not; bad files stop startup."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.server import start_server
from dynamo_mono.config import ConfigError, resolve
from dynamo_mono.http.tls import server_ssl_context
from dynamo_mono.options import CORE_OPTIONS

pytestmark = pytest.mark.timeout(120)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def make_self_signed(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 / localhost (it is its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dynamo-mono test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(ski, False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_key_pem(key))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def _settings(cli: dict[str, str] | None = None, env: dict[str, str] | None = None):
    return resolve(CORE_OPTIONS, cli or {}, env=env or {})


def test_no_tls_options_means_plain_http() -> None:
    assert server_ssl_context(_settings()) is None


def test_both_files_give_a_server_context(tls_files) -> None:
    cert, key = tls_files
    ctx = server_ssl_context(_settings({"tls_cert_path": cert, "tls_key_path": key}))
    assert isinstance(ctx, ssl.SSLContext)
    ctx = server_ssl_context(_settings(env={"DYN_TLS_CERT_PATH": cert, "DYN_TLS_KEY_PATH": key}))
    assert isinstance(ctx, ssl.SSLContext)


@pytest.mark.parametrize("cli,env,needle", [
    ({"tls_cert_path": "CERT"}, {}, "--tls-cert-path needs --tls-key-path as well"),
    ({"tls_key_path": "KEY"}, {}, "--tls-key-path needs --tls-cert-path as well"),
    ({}, {"DYN_TLS_KEY_PATH": "KEY"}, "DYN_TLS_KEY_PATH needs --tls-cert-path as well"),
    ({"tls_cert_path": "CERT", "tls_key_path": "/nonexistent/key.pem"}, {},
     "invalid --tls-key-path='/nonexistent/key.pem': cannot read it (No such file or directory)"),
    ({"tls_key_path": "KEY"}, {"DYN_TLS_CERT_PATH": "/nonexistent/cert.pem"},
     "invalid DYN_TLS_CERT_PATH='/nonexistent/cert.pem': cannot read it"),
])
def test_half_or_unreadable_configuration_is_a_config_error(tls_files, cli, env, needle) -> None:
    cert, key = tls_files
    fill = {"CERT": cert, "KEY": key}
    cli = {k: fill.get(v, v) for k, v in cli.items()}
    env = {k: fill.get(v, v) for k, v in env.items()}
    with pytest.raises(ConfigError) as e:
        server_ssl_context(_settings(cli, env))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unusable_files_are_a_config_error(tls_files, tmp_path: Path) -> None:
    cert, key = tls_files
    other = tmp_path / "other.pem"
    other.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match=r"invalid --tls-cert-path=.* / --tls-key-path=.*other\.pem.*mismatch"):
        server_ssl_context(_settings({"tls_cert_path": cert, "tls_key_path": str(other)}))
    locked = tmp_path / "locked.pem"
    locked.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()), passphrase=b"secret"))
    with pytest.raises(ConfigError, match="passphrase-protected"):
        server_ssl_context(_settings({"tls_cert_path": cert, "tls_key_path": str(locked)}))
    with pytest.raises(ConfigError, match=r"invalid --tls-cert-path=.*key\.pem"):
        server_ssl_context(_settings({"tls_cert_path": key, "tls_key_path": key}))  # a key is not a certificate


def test_serve_with_half_tls_configuration_exits_2(tls_files) -> None:
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--port", "0", "--tls-cert-path",
                        tls_files[0]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "--tls-cert-path needs --tls-key-path" in r.stderr


def test_openai_sdk_over_https_and_plain_http_refused(tls_files) -> None:
    cert, key = tls_files
    srv = start_server(["--speedup-ratio", "0", "--tls-cert-path", cert, "--tls-key-path", key,
                        "--worker-token", "t"], ca_file=cert)
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        assert f"on https://127.0.0.1:{srv.port}" in srv.log()
        with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as http_client:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, http_client=http_client)
            model = client.models.list().data[0].id
            r = client.chat.completions.create(model=model, max_tokens=8,
                                               messages=[{"role": "user", "content": "hello over TLS"}])
            assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
            chunks = list(client.chat.completions.create(model=model, max_tokens=4, stream=True,
                                                         messages=[{"role": "user", "content": "stream"}]))
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert isinstance(_plain_http_error(f"http://{srv.host}:{srv.port}/ready"),
                          (http.client.RemoteDisconnected, ConnectionError))
        with pytest.raises(urllib.error.URLError) as e:  # the default trust store does not know the cert
            urllib.request.urlopen(srv.url + "/ready", timeout=10)
        assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
        # a worker given --connect https://... finds the worker port, trusting the CA named by SSL_CERT_FILE
        code = ("import asyncio, sys; from dynamo_mono.worker.process import resolve_endpoint; "
                "print(asyncio.run(resolve_endpoint(sys.argv[1]))[1])")
        r = subprocess.run([sys.executable, "-c", code, srv.url], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "SSL_CERT_FILE": cert})
        assert r.returncode == 0 and int(r.stdout) > 0, r.stderr
    finally:
        srv.stop()


def _plain_http_error(url: str) -> BaseException:
    """Plain HTTP to the TLS port: the handshake fails and the server drops the connection, no response."""
    try:
        urllib.request.urlopen(url, timeout=10)
    except urllib.error.URLError as exc:  # failed while sending the request
        return exc.reason if isinstance(exc.reason, BaseException) else exc
    except (http.client.HTTPException, ConnectionError) as exc:  # failed while reading the response
        return exc
    raise AssertionError(f"{url} answered over plain HTTP")
