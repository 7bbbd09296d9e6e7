#!/usr/bin/env python3
"""The kernel's floor for streaming one token: one wake-up + one loopback TCP send.

A producer thread sends a 64-byte datagram every GAP seconds on a Unix
SEQPACKET pair (as a worker's event does); the measured thread sleeps in
epoll_wait, reads it, and writes 200 bytes to a loopback TCP connection (as an
SSE frame) read by a client thread. It prints that thread's user and system
CPU per token (getrusage RUSAGE_THREAD). The system part is what any server
pays per streamed token on this machine; run it while a model generates to see
it under the same contention. Usage: wake_floor.py [TOKENS=1000] [GAP=0.007]
"""

import resource
import select
import socket
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
GAP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.007

a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()


def client():
    s = socket.create_connection(listener.getsockname())
    total = 0
    while total < N * 200:
        data = s.recv(65536)
        if not data:
            break
        total += len(data)


def producer():
    for _ in range(N):
        time.sleep(GAP)
        a.send(b"x" * 64)


threading.Thread(target=client, daemon=True).start()
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
threading.Thread(target=producer, daemon=True).start()
ep = select.epoll()
ep.register(b.fileno(), select.EPOLLIN | select.EPOLLET)
frame = b"y" * 200
r0 = resource.getrusage(resource.RUSAGE_THREAD)
n = 0
while n < N:
    ep.poll(0.5)
    while True:
        try:
            b.recv(256, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        n += 1
        conn.send(frame)
r1 = resource.getrusage(resource.RUSAGE_THREAD)
user = (r1.ru_utime - r0.ru_utime) / N * 1e6
system = (r1.ru_stime - r0.ru_stime) / N * 1e6
print(f"floor: {system:.1f} us system (+ {user:.1f} us user, Python) per token")
