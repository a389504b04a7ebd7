"""The destination's side of a move's first copy into an empty volume: one tar stream.

    stream_receive.py PORT MOUNT DONE    (FLOCKER_SECRET: the move's password, FLOCKER_ALLOWED: the source's address)

It takes one connection, from the source's address only, that must start with the move's
password, and feeds the socket to `tar -x`; then it answers ``DONE <tar's status>``: the
sender must wait for it, since its own exit proves nothing about the extraction. The copy
is synced to disk before the answer.
"""

import hmac
import os
import socket
import subprocess
import sys


def main() -> int:
    port, mount, done = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    secret = os.environ["FLOCKER_SECRET"].encode()
    allowed = os.environ["FLOCKER_ALLOWED"]
    server = socket.create_server(("0.0.0.0", port))
    print("flocker-receiver listening", flush=True)
    while True:
        conn, (peer, _) = server.accept()
        conn.settimeout(30)
        got = b""
        try:
            while peer == allowed and len(got) < len(secret):
                chunk = conn.recv(len(secret) - len(got))
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        if peer != allowed or not hmac.compare_digest(got, secret):
            print("refused a connection from", peer, flush=True)
            conn.close()
            continue
        conn.settimeout(None)
        tar = ["tar", "-x", "-p", "--numeric-owner", "-C", mount, "-f", "-"]
        code = subprocess.run(tar, stdin=conn.fileno()).returncode
        if code == 0:
            # The copy on this node's disk before the answer, while the application still
            # serves on the source: left dirty (GBs after a big stream), its writeback slowed
            # every fsync here when the application started on this node (a 4 GB move's
            # downtime was 0.81-1.15 s there, 0.47-0.49 s on the way back).
            subprocess.run(["sync", "--file-system", mount], check=False)
        conn.sendall(f"{done} {code}\n".encode())
        conn.close()
        return code


if __name__ == "__main__":
    sys.exit(main())
