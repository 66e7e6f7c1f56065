#!/usr/bin/env python3
"""Helpers for scripts/bench-blob (standard library only).

  proxy LISTEN_PORT UPSTREAM_PORT ONE_WAY_MS   loopback TCP proxy adding a one-way
                                               delay in each direction (RTT = 2x)
  sas ACCOUNT KEY CONTAINER BLOB PERMS         prints a service SAS query (sr=b)
  upload ENDPOINT/CONTAINER BLOB FILE ACCOUNT KEY   container + page blob, non-zero pages only
  footer FILE                                  appends a fixed-VHD footer for FILE's size
"""
import asyncio, base64, datetime, hashlib, hmac, http.client, sys, urllib.parse

VERSION = "2021-08-06"


def sas(account, key, container, blob, perms):
    now = datetime.datetime.now(datetime.timezone.utc)
    st = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    se = (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = f"/blob/{account}/{container}/{blob}"
    to_sign = f"{perms}\n{st}\n{se}\n{res}\n\n\nhttps,http\n{VERSION}\nb\n\n\n\n\n\n\n"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    return urllib.parse.urlencode({"sv": VERSION, "sr": "b", "sp": perms, "st": st, "se": se,
                                   "spr": "https,http", "sig": sig})


def upload(endpoint, blob, path, account, key):
    u = urllib.parse.urlparse(endpoint)
    container = u.path.rstrip("/").split("/")[-1]
    conn = http.client.HTTPConnection(u.hostname, u.port)
    q = sas(account, key, container, blob, "rcw")
    # The container, via an account-level request Azurite accepts with Shared Key
    # only; simplest is the well-known dev account through an account SAS.
    now = datetime.datetime.now(datetime.timezone.utc)
    st = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    se = (now + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to_sign = f"{account}\nrwdlac\nb\nsco\n{st}\n{se}\n\nhttps,http\n{VERSION}\n\n"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    aq = urllib.parse.urlencode({"sv": VERSION, "ss": "b", "srt": "sco", "sp": "rwdlac", "st": st,
                                 "se": se, "spr": "https,http", "sig": sig})
    conn.request("PUT", f"{u.path}?restype=container&{aq}", headers={"x-ms-version": VERSION, "Content-Length": "0"})
    r = conn.getresponse(); r.read()
    if r.status not in (201, 409):
        sys.exit(f"create container: {r.status}")
    import os
    size = (os.path.getsize(path) + 511) // 512 * 512
    bpath = f"{u.path}/{blob}"
    conn.request("PUT", f"{bpath}?{q}", headers={"x-ms-version": VERSION, "x-ms-blob-type": "PageBlob",
                                                "x-ms-blob-content-length": str(size), "Content-Length": "0"})
    r = conn.getresponse(); r.read()
    if r.status != 201:
        sys.exit(f"create page blob: {r.status}")
    zero = bytes(512)
    put = 0
    with open(path, "rb") as f:
        off = 0
        while off < size:
            chunk = f.read(4 << 20)
            if not chunk:
                break
            chunk += bytes((-len(chunk)) % 512)
            p = 0
            while p < len(chunk):
                if chunk[p:p + 512] == zero:
                    p += 512
                    continue
                s = p
                while p < len(chunk) and chunk[p:p + 512] != zero:
                    p += 512
                conn.request("PUT", f"{bpath}?comp=page&{q}", body=chunk[s:p],
                             headers={"x-ms-version": VERSION, "x-ms-page-write": "update",
                                      "x-ms-range": f"bytes={off + s}-{off + p - 1}"})
                r = conn.getresponse(); r.read()
                if r.status != 201:
                    sys.exit(f"put page: {r.status}")
                put += p - s
            off += len(chunk)
    print(put)


async def pipe(reader, writer, delay):
    loop = asyncio.get_running_loop()
    q = asyncio.Queue()

    async def pump():
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(pump())
    try:
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            await q.put((loop.time() + delay, data))
    except ConnectionError:
        pass
    await q.put((0, None))
    try:
        await task
    except ConnectionError:
        pass


async def proxy(listen, upstream, one_way_ms):
    delay = one_way_ms / 1000.0

    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, uw, delay), pipe(ur, cw, delay))

    srv = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with srv:
        await srv.serve_forever()


def footer(path):
    import os, struct
    size = os.path.getsize(path)
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQ", f, 8, 2, 0x00010000, 0xFFFFFFFFFFFFFFFF)
    f[28:32] = b"flr "
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQHBBI", f, 40, size, size, 65535, 16, 255, 2)
    f[68:84] = bytes([0x5A]) * 16
    struct.pack_into(">I", f, 64, (~sum(f)) & 0xFFFFFFFF)
    with open(path, "ab") as out:
        out.write(f)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "proxy":
        asyncio.run(proxy(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    elif cmd == "footer":
        footer(sys.argv[2])
    elif cmd == "sas":
        print(sas(*sys.argv[2:7]))
    elif cmd == "upload":
        upload(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)
