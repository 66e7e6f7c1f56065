#!/usr/bin/env python3
"""Microsoft's azure-storage-blob SDK, unmodified, against flr's test Blob
service (crates/flr-kvtest, driven by its tests/blob_sdk_conformance.rs).

Environment: BLOB_ENDPOINT (https://127.0.0.1:PORT/ACCOUNT), BLOB_ACCOUNT,
BLOB_KEY, BLOB_CA (the test CA), and BLOB_TENANT / BLOB_CLIENT_ID /
BLOB_CLIENT_SECRET / BLOB_AUTHORITY for the Entra token check.

Every expected value comes from this script's own model of the blob (a
bytearray written alongside), never from the server. Prints
"BLOB CONFORMANCE OK" at the end.
"""

import os
import sys
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    AccountSasPermissions,
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    BlobType,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
)

EP = os.environ["BLOB_ENDPOINT"]
ACCOUNT = os.environ["BLOB_ACCOUNT"]
KEY = os.environ["BLOB_KEY"]
CA = os.environ["BLOB_CA"]
SIZE = 4 << 20


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)
    print("ok:", what)


def refused(fn, status, code, what):
    try:
        fn()
    except HttpResponseError as e:
        check(
            e.status_code == status and e.error_code == code,
            f"{what}: refused with {status} {code} (got {e.status_code} {e.error_code})",
        )
        return
    check(False, f"{what}: was accepted")


def runs(model_old, model_new, step=512):
    """Pages whose bytes differ, as merged inclusive (start, end)."""
    out = []
    for off in range(0, len(model_new), step):
        if model_old[off : off + step] != model_new[off : off + step]:
            if out and out[-1][1] + 1 == off:
                out[-1][1] = off + step - 1
            else:
                out.append([off, off + step - 1])
    return [tuple(r) for r in out]


def as_pairs(ranges):
    return [(r["start"], r["end"]) for r in ranges]


svc = BlobServiceClient(
    EP, credential={"account_name": ACCOUNT, "account_key": KEY}, connection_verify=CA
)
cc = svc.create_container("sdk")
b = cc.get_blob_client("disk.vhd")
b.create_page_blob(SIZE)
props = b.get_blob_properties()
check(props.size == SIZE and props.blob_type == BlobType.PAGEBLOB, "create_page_blob, get_blob_properties (Shared Key)")

model = bytearray(SIZE)
written = bytearray(SIZE // 512)  # 1 where a page is written


def upload(off, data):
    b.upload_page(data, offset=off, length=len(data))
    model[off : off + len(data)] = data
    for p in range(off // 512, (off + len(data)) // 512):
        written[p] = 1


def clear(off, n):
    b.clear_page(offset=off, length=n)
    model[off : off + n] = bytes(n)
    for p in range(off // 512, (off + n) // 512):
        written[p] = 0


def written_runs():
    out = []
    for p, w in enumerate(written):
        if w:
            if out and out[-1][1] + 1 == p * 512:
                out[-1][1] = p * 512 + 511
            else:
                out.append([p * 512, p * 512 + 511])
    return [tuple(r) for r in out]


upload(0, os.urandom(4096))
upload(1 << 20, os.urandom(65536))
upload(3 << 20, os.urandom(512))
# The SDK refuses a misaligned page itself, so that one goes by hand (with
# a write SAS the SDK signs).
import requests

wsas = generate_blob_sas(ACCOUNT, "sdk", "disk.vhd", account_key=KEY, permission=BlobSasPermissions(write=True),
                         expiry=datetime.now(timezone.utc) + timedelta(hours=1))
r = requests.put(f"{EP}/sdk/disk.vhd?comp=page&{wsas}", data=b"x" * 512, verify=CA,
                 headers={"x-ms-version": "2021-08-06", "x-ms-page-write": "update", "x-ms-range": "bytes=100-611"})
check(r.status_code == 416 and r.headers.get("x-ms-error-code") == "InvalidPageRange" and "<Code>InvalidPageRange</Code>" in r.text,
      f"a page write off the 512-byte grid: 416 InvalidPageRange ({r.status_code} {r.headers.get('x-ms-error-code')})")
refused(lambda: b.upload_page(b"x" * 512, offset=SIZE, length=512), 416, "InvalidPageRange", "a page write past the end")

ranges, clears = b.get_page_ranges()
check(as_pairs(ranges) == written_runs() and clears == [], "get_page_ranges lists the written pages")
s1 = b.create_snapshot()["snapshot"]
check(bool(s1), "create_snapshot returns x-ms-snapshot")
old = bytes(model)
old_written = written_runs()

upload(8192, os.urandom(1024))
clear(1 << 20, 4096)
upload((2 << 20) + 512, os.urandom(1536))
s2 = b.create_snapshot()["snapshot"]
snap1 = svc.get_blob_client("sdk", "disk.vhd", snapshot=s1)
snap2 = svc.get_blob_client("sdk", "disk.vhd", snapshot=s2)
new = bytes(model)

want_changed = [(8192, 9215), ((2 << 20) + 512, (2 << 20) + 2047)]
want_cleared = [(1 << 20, (1 << 20) + 4095)]
ranges, clears = snap2.get_page_ranges(previous_snapshot_diff=s1)
check(as_pairs(ranges) == want_changed and as_pairs(clears) == want_cleared, "get_page_ranges(previous_snapshot_diff=) lists written and cleared pages")
check(runs(old, new) == sorted(want_changed + want_cleared), "the diff covers exactly the pages whose bytes changed")

expiry = datetime.now(timezone.utc) + timedelta(hours=1)
sas1 = generate_blob_sas(ACCOUNT, "sdk", "disk.vhd", snapshot=s1, account_key=KEY,
                         permission=BlobSasPermissions(read=True), expiry=expiry)
url1 = f"{EP}/sdk/disk.vhd?snapshot={quote(s1)}&{sas1}"
ranges, clears = snap2.get_page_range_diff_for_managed_disk(url1)
check(as_pairs(ranges) == want_changed and as_pairs(clears) == want_cleared, "get_page_range_diff_for_managed_disk (x-ms-previous-snapshot-url)")

listed = list(snap2.list_page_ranges(previous_snapshot=s1))
check([(r.start, r.end, r.cleared) for r in listed]
      == sorted([(s, e, False) for s, e in want_changed] + [(s, e, True) for s, e in want_cleared]),
      "list_page_ranges(previous_snapshot=) interleaves PageRange and ClearRange in offset order")

# Many ranges, listed a few per page with continuation markers.
for i in range(40):
    upload(4096 * (2 * i + 600), os.urandom(512))
s3 = b.create_snapshot()["snapshot"]
snap3 = svc.get_blob_client("sdk", "disk.vhd", snapshot=s3)
pages = snap3.list_page_ranges(previous_snapshot=s2, results_per_page=7).by_page()
got, npages, tokens = [], 0, []
for page in pages:
    npages += 1
    got.extend((r.start, r.end) for r in page)
    tokens.append(pages.continuation_token)
check(got == [(4096 * (2 * i + 600), 4096 * (2 * i + 600) + 511) for i in range(40)] and npages == 6,
      f"list_page_ranges(results_per_page=7): 40 ranges in 6 pages ({npages})")
check(all(tokens[:-1]) and not tokens[-1], "continuation tokens until the last page")
all_ranges = [(r.start, r.end) for r in snap3.list_page_ranges(results_per_page=5)]
check(all_ranges == written_runs(), "list_page_ranges of a snapshot, paged, equals the written pages")

data = snap2.download_blob(offset=(1 << 20) - 512, length=8192).readall()
check(data == new[(1 << 20) - 512 : (1 << 20) + 7680], "download_blob(offset, length) of a snapshot")
data = snap1.download_blob().readall()
check(data == old, "download_blob of the whole older snapshot")
check(snap1.get_blob_properties().size == SIZE, "get_blob_properties of a snapshot")

sas = generate_blob_sas(ACCOUNT, "sdk", "disk.vhd", account_key=KEY,
                        permission=BlobSasPermissions(read=True), expiry=expiry)
by_sas = BlobClient.from_blob_url(f"{EP}/sdk/disk.vhd?{sas}", connection_verify=CA)
check(by_sas.download_blob(offset=0, length=4096).readall() == bytes(model[:4096]), "a service SAS (generate_blob_sas) reads")
snap_sas = BlobClient.from_blob_url(url1, connection_verify=CA)
check(snap_sas.download_blob(offset=0, length=4096).readall() == old[:4096], "a snapshot SAS (sr=bs) reads its snapshot")
refused(lambda: by_sas.upload_page(b"y" * 512, offset=0, length=512), 403, "AuthorizationPermissionMismatch", "a read SAS writing")
bad = sas.replace("sig=", "sig=AAAA")
refused(lambda: BlobClient.from_blob_url(f"{EP}/sdk/disk.vhd?{bad}", connection_verify=CA).get_blob_properties(), 403, "AuthenticationFailed", "a SAS with a wrong signature")
other = generate_blob_sas(ACCOUNT, "sdk", "other.vhd", account_key=KEY,
                          permission=BlobSasPermissions(read=True), expiry=expiry)
refused(lambda: BlobClient.from_blob_url(f"{EP}/sdk/disk.vhd?{other}", connection_verify=CA).get_blob_properties(), 403, "AuthenticationFailed", "a SAS signed for another blob")
expired = generate_blob_sas(ACCOUNT, "sdk", "disk.vhd", account_key=KEY, permission=BlobSasPermissions(read=True),
                            expiry=datetime.now(timezone.utc) - timedelta(minutes=5),
                            start=datetime.now(timezone.utc) - timedelta(hours=1))
refused(lambda: BlobClient.from_blob_url(f"{EP}/sdk/disk.vhd?{expired}", connection_verify=CA).get_blob_properties(), 403, "AuthenticationFailed", "an expired SAS")
wrong_key = BlobServiceClient(EP, credential={"account_name": ACCOUNT, "account_key": "AAAA" + KEY[4:]}, connection_verify=CA)
refused(lambda: wrong_key.get_blob_client("sdk", "disk.vhd").get_blob_properties(), 403, "AuthenticationFailed", "Shared Key with a wrong key")

acct_sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(object=True), AccountSasPermissions(read=True), expiry)
by_acct = BlobClient.from_blob_url(f"{EP}/sdk/disk.vhd?{acct_sas}", connection_verify=CA)
check(by_acct.get_blob_properties().size == SIZE, "an account SAS (generate_account_sas) reads")
refused(lambda: by_acct.upload_page(b"y" * 512, offset=0, length=512), 403, "AuthorizationPermissionMismatch", "a read account SAS writing")

if os.environ.get("BLOB_CLIENT_ID"):
    from azure.identity import ClientSecretCredential

    cred = ClientSecretCredential(os.environ["BLOB_TENANT"], os.environ["BLOB_CLIENT_ID"],
                                  os.environ["BLOB_CLIENT_SECRET"], authority=os.environ["BLOB_AUTHORITY"],
                                  connection_verify=CA, disable_instance_discovery=True)
    entra = BlobClient(EP, "sdk", "disk.vhd", credential=cred, connection_verify=CA)
    check(entra.download_blob(offset=0, length=512).readall() == bytes(model[:512]), "an Entra token (ClientSecretCredential) reads")

print("BLOB CONFORMANCE OK")
