"""A TCP proxy on 127.0.0.1 that forwards to a server and can cut connections: `cut_next(n)` drops the
connection carrying each of the next `n` client requests, the way a network blip or a failover does."""
from __future__ import annotations

import socket
import threading


class FlakyProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._lock = threading.Lock()
        self._cuts = 0
        self.cut_count = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next(self, n: int) -> None:
        with self._lock:
            self._cuts = n

    def close(self) -> None:
        self._listener.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if self._cuts > 0:
                self._cuts -= 1
                self.cut_count += 1
                return True
            return False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, is_request: bool) -> None:
        try:
            while data := source.recv(65536):
                if is_request and self._take_cut():
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
