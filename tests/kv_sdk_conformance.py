#!/usr/bin/env python3
"""Drives flr's Key Vault test server (crates/flr-kvtest) with Microsoft's
unmodified Python SDK (azure-keyvault-keys, azure-keyvault-secrets): if the
SDK accepts every answer, the server speaks the real protocol.

Run by crates/flr-kvtest/tests/sdk_conformance.rs, which starts the server
and passes it in the environment:
  KV_URL            https://127.0.0.1:PORT
  KV_CA             the test CA (PEM file)
  KV_TENANT         the tenant named in the server's challenge
  KV_CLIENT_ID      a client registered on the server ...
  KV_CLIENT_SECRET  ... and its secret
The credential fetches real tokens from the server's own token endpoint (the
authority of the challenge), so the challenge, the token endpoint and the
vault are all exercised. Exits non-zero on the first mismatch.
"""

import base64
import os
import re
import sys
import time

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
)
from azure.keyvault.secrets import SecretClient

URL = os.environ["KV_URL"]
CA = os.environ["KV_CA"]
TENANT = os.environ["KV_TENANT"]
CLIENT_ID = os.environ["KV_CLIENT_ID"]
CLIENT_SECRET = os.environ["KV_CLIENT_SECRET"]

# The knobs a local vault needs: the challenge's resource is not the host,
# the CA is the server's own, and injected faults must not be retried.
KNOBS = dict(verify_challenge_resource=False, connection_verify=CA, retry_total=0)
VERSION = re.compile(r"^[0-9a-f]{32}$")


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


class ServerCredential:
    """Client credentials against the authority the challenge named."""

    def __init__(self):
        self.tenants = []

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        self.tenants.append(tenant_id)
        r = requests.post(
            f"{URL}/{tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scope": " ".join(scopes),
            },
            verify=CA,
            timeout=30,
        )
        r.raise_for_status()
        body = r.json()
        check(body["token_type"] == "Bearer", "token endpoint grants a Bearer token")
        return AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))


def expect_error(fn, status, code, inner, message=None):
    try:
        fn()
    except HttpResponseError as e:
        return (
            e.status_code == status
            and e.error is not None
            and e.error.code == code
            and (e.error.innererror or {}).get("code") == inner
            and (message is None or e.error.message == message)
        ), e
    return False, None


def keys(cred):
    kc = KeyClient(URL, cred, **KNOBS)
    name = "kek-conformance"
    k1 = kc.create_rsa_key(name, size=2048)
    check(k1.key_type == "RSA" and len(k1.key.n) == 256 and k1.key.e == b"\x01\x00\x01",
          "create_rsa_key: an RSA-2048 key with n and e")
    check(VERSION.match(k1.properties.version) is not None, "key version is 32 lowercase hex")
    check(k1.id == f"{URL}/keys/{name}/{k1.properties.version}", "kid is built from the Host")
    check(k1.properties.enabled is True and k1.properties.created_on is not None
          and k1.properties.recovery_level == "Recoverable+Purgeable", "key attributes")
    check("unwrapKey" in k1.key_operations and "wrapKey" in k1.key_operations, "key_ops")
    k2 = kc.create_rsa_key(name, size=2048)
    k3 = kc.create_rsa_key(name, size=3072)
    check(kc.get_key(name).id == k3.id, "get_key without version is the latest")
    check(kc.get_key(name, k1.properties.version).key.n == k1.key.n, "get_key of a version")

    pages = list(kc.list_properties_of_key_versions(name, max_page_size=1).by_page())
    ids = [p.id for page in pages for p in page]
    check(len(pages) == 3 and sorted(ids) == sorted([k1.id, k2.id, k3.id]),
          "list_properties_of_key_versions follows nextLink page by page")

    try:
        kc.get_key("no-such-key")
        check(False, "a missing key raises")
    except ResourceNotFoundError as e:
        check(e.status_code == 404 and e.error.code == "KeyNotFound", "missing key: 404 KeyNotFound")

    kid = k2.id
    crypto = CryptographyClient(kid, cred, **KNOBS)
    cek = bytes(range(32))
    for alg in (KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa1_5):
        wrapped = crypto.wrap_key(alg, cek)
        check(len(wrapped.encrypted_key) == 256, f"wrap_key {alg.value}")
        unwrapped = crypto.unwrap_key(alg, wrapped.encrypted_key)
        check(unwrapped.key == cek and unwrapped.key_id == kid, f"unwrap_key {alg.value} round trip")

    # The server's own wrapkey, through the SDK's pipeline (challenge and token included).
    resp = kc.send_request(HttpRequest(
        "POST", f"/keys/{name}/{k2.properties.version}/wrapkey?api-version=7.5",
        json={"alg": "RSA-OAEP-256", "value": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}))
    resp.raise_for_status()
    server_wrapped = base64.urlsafe_b64decode(resp.json()["value"] + "==")
    check(crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, server_wrapped).key == cek,
          "server-side wrapkey unwraps to the same key")

    enc = crypto.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"plaintext")
    check(crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext).plaintext == b"plaintext",
          "encrypt/decrypt round trip")

    props = kc.update_key_properties(name, k2.properties.version, enabled=False)
    check(props.properties.enabled is False, "update_key_properties(enabled=False)")
    check(kc.get_key(name, k2.properties.version).properties.enabled is False,
          "a disabled key still reads")
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep, cek)  # local: no request
    ok, e = expect_error(lambda: crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key),
                         403, "Forbidden", "KeyDisabled",
                         "Operation unwrapKey is not allowed on a disabled key.")
    check(ok, f"unwrap on a disabled key: 403 Forbidden/KeyDisabled ({e})")

    deleted = kc.begin_delete_key(name).result()
    check(deleted.recovery_id == f"{URL}/deletedkeys/{name}" and deleted.deleted_date is not None,
          "begin_delete_key")
    try:
        kc.get_key(name)
        check(False, "a deleted key is gone")
    except ResourceNotFoundError as e:
        check(e.error.code == "KeyNotFound", "deleted key: 404 KeyNotFound")
    check(kc.get_deleted_key(name).name == name, "get_deleted_key")
    recovered = kc.begin_recover_deleted_key(name).result()
    check(recovered.id == k3.id, "begin_recover_deleted_key brings the latest version back")
    kc.begin_delete_key(name).wait()
    kc.purge_deleted_key(name)
    try:
        kc.get_deleted_key(name)
        check(False, "a purged key is gone")
    except ResourceNotFoundError:
        check(True, "purge_deleted_key")


def secrets(cred):
    sc = SecretClient(URL, cred, **KNOBS)
    name = "bek-conformance"
    tags = {"DiskEncryptionKeyFileName": "4381F759.BEK", "MachineName": "vm1"}
    s1 = sc.set_secret(name, "first", content_type="Wrapped BEK", tags=tags)
    check(VERSION.match(s1.properties.version) is not None and s1.value == "first",
          "set_secret returns the version and value")
    check(s1.properties.content_type == "Wrapped BEK" and s1.properties.tags == tags,
          "set_secret keeps contentType and tags")
    s2 = sc.set_secret(name, "second")
    check(sc.get_secret(name).value == "second", "get_secret without version is the latest")
    got = sc.get_secret(name, s1.properties.version)
    check(got.value == "first" and got.properties.tags == tags
          and got.properties.content_type == "Wrapped BEK", "get_secret of a version")

    pages = list(sc.list_properties_of_secret_versions(name, max_page_size=1).by_page())
    items = [p for page in pages for p in page]
    check(len(pages) == 2 and sorted(p.id for p in items) == sorted([s1.id, s2.id]),
          "list_properties_of_secret_versions follows nextLink")
    check(any(p.content_type == "Wrapped BEK" and p.tags == tags for p in items),
          "version items carry contentType and tags")

    sc.update_secret_properties(name, s2.properties.version, enabled=False)
    ok, e = expect_error(lambda: sc.get_secret(name), 403, "Forbidden", "SecretDisabled",
                         "Operation get is not allowed on a disabled secret.")
    check(ok, f"disabled secret: 403 Forbidden/SecretDisabled ({e})")
    listed = list(sc.list_properties_of_secret_versions(name))
    check(len(listed) == 2 and any(p.enabled is False for p in listed),
          "versions of a disabled secret still list")
    try:
        sc.get_secret("no-such-secret")
        check(False, "a missing secret raises")
    except ResourceNotFoundError as e:
        check(e.error.code == "SecretNotFound", "missing secret: 404 SecretNotFound")
    deleted = sc.begin_delete_secret(name).result()
    check(deleted.recovery_id == f"{URL}/deletedsecrets/{name}", "begin_delete_secret")


def main():
    cred = ServerCredential()
    keys(cred)
    secrets(cred)
    check(cred.tenants and all(t == TENANT for t in cred.tenants),
          "the SDK asked for tokens in the challenge's tenant")
    print("CONFORMANCE OK", flush=True)


if __name__ == "__main__":
    main()
